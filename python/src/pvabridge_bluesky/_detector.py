"""An areaDetector ADSimDetector with a PVA plugin, as an ophyd-async device."""

from __future__ import annotations

from typing import Annotated as A

from ophyd_async.core import (
    AsyncStatus,
    SignalRW,
    StandardReadable,
    StrictEnum,
    wait_for_value,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.core import EpicsDeviceConnector, PvSuffix


class AcquireState(StrictEnum):
    """The choices of ``cam1:Acquire``."""

    DONE = "Done"
    ACQUIRE = "Acquire"


class SimDetector(StandardReadable):
    """An ADSimDetector whose PVs are served over PVA: ``pvabridge simdet --ad-prefix P`` or a
    real IOC through QSRV (``pva://`` is the default protocol; give ``ca://P`` for Channel Access).

    ``prepare(n)`` sets ``cam1:NumImages``; ``trigger()`` puts ``cam1:Acquire`` and waits until it
    reads Done again (a real busy record completes the put then). Reading it gives the frame
    counter. The frames stream on ``P Pva1:Image`` (:attr:`data_channel`).
    """

    acquire: A[SignalRW[bool], PvSuffix.rbv("cam1:Acquire")]
    num_images: A[SignalRW[int], PvSuffix.rbv("cam1:NumImages"), Format.CONFIG_SIGNAL]
    acquire_time: A[SignalRW[float], PvSuffix.rbv("cam1:AcquireTime"), Format.CONFIG_SIGNAL]
    array_counter: A[
        SignalRW[int], PvSuffix.rbv("cam1:ArrayCounter"), Format.HINTED_UNCACHED_SIGNAL
    ]

    def __init__(self, prefix: str, name: str = "", plugin: str = "Pva1:"):
        if "://" not in prefix:
            prefix = "pva://" + prefix
        self._data_channel = prefix.split("://", 1)[1] + plugin + "Image"
        super().__init__(name=name, connector=EpicsDeviceConnector(prefix))

    @property
    def data_channel(self) -> str:
        """The PV the frames stream on (the PVA plugin's image)."""
        return self._data_channel

    @AsyncStatus.wrap
    async def prepare(self, value: int) -> None:
        """Take ``value`` frames per acquisition."""
        await self.num_images.set(value)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Acquire NumImages frames and wait until the detector reads Done."""
        num_images = await self.num_images.get_value()
        acquire_time = await self.acquire_time.get_value()
        timeout = 10.0 + 2.0 * num_images * acquire_time
        await self.acquire.set(True, timeout=timeout)
        await wait_for_value(self.acquire, False, timeout=timeout)
