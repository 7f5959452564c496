"""A pvapy-hpc-consumer processor that records the uniqueId of every frame it is given, one per
line, in DIR/ids-CONSUMER (processor args: {"dir": DIR}), so that a test can check what each
consumer of a distributing fleet received."""

import os

from pvapy.hpc.userDataProcessor import UserDataProcessor


class IdRecorder(UserDataProcessor):
    def __init__(self, configDict={}):
        UserDataProcessor.__init__(self, configDict)
        self.dir = configDict.get("dir", ".")
        self.out = None

    def start(self):
        self.out = open(os.path.join(self.dir, f"ids-{self.processorId}"), "w")

    def process(self, pvObject):
        self.out.write(f"{pvObject['uniqueId']}\n")
        self.out.flush()
        return pvObject

    def stop(self):
        if self.out:
            self.out.close()
