"""The Phoebus display of a slot: valid BOB XML, and every PV it names served by a real slot."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import SLOT
from p4p.client.thread import Context

from pvabridge_bluesky import screen_path

# The widget types the display uses, as Phoebus names them.
WIDGET_TYPES = {"label", "textupdate", "action_button", "table"}


def display() -> ET.Element:
    return ET.parse(screen_path()).getroot()


def pv_names(root: ET.Element) -> set[str]:
    """Every PV the display names, with the macro P set to the test's slot. `$(pv_name)` (an
    action writing its own widget's PV) is that widget's PV, already counted."""
    names = {
        element.text.strip()
        for element in root.iter("pv_name")
        if element.text and element.text.strip() != "$(pv_name)"
    }
    return {name.replace("$(P)", SLOT).removeprefix("pva://") for name in names}


def test_the_screen_is_a_bob_display_with_well_formed_widgets():
    root = display()
    assert root.tag == "display" and root.get("version")
    assert root.findtext("macros/P"), "a default for the macro P"
    widgets = root.findall("widget")
    assert widgets
    for widget in widgets:
        assert widget.get("type") in WIDGET_TYPES, widget.get("type")
        assert widget.get("version")
        for member in ("name", "x", "y", "width", "height"):
            assert widget.findtext(member), (widget.findtext("name"), member)
        for member in ("x", "y", "width", "height"):
            int(widget.findtext(member))
    buttons = {w.findtext("text"): w for w in widgets if w.get("type") == "action_button"}
    assert set(buttons) == {"START", "ACQ_STARTED", "ACQ_DONE", "ABORT", "RESET"}
    for text, button in buttons.items():
        action = button.find("actions/action")
        assert action.get("type") == "write_pv"
        assert action.findtext("description") == text


def test_every_pv_the_screen_names_is_served_by_a_slot(services):
    names = pv_names(display())
    for suffix in (
        "State",
        "Message",
        "Command",
        "FramesReceived",
        "JobId",
        "JobStatus",
        "Stages",
    ):
        assert SLOT + suffix in names, suffix
    missing = []
    with Context("pva") as ctx:
        for name in sorted(names):
            try:
                ctx.get(name, timeout=5)
            except Exception as err:  # a PV that is not served times out
                missing.append(f"{name} ({type(err).__name__})")
    assert not missing, f"the screen names PVs the slot does not serve: {missing}"
