"""The plugin runs on the binding set-up installs (PyQt6, napari's default), and napari starts without the PyQt5
deprecation notice (napari 0.9 warns that PyQt5 support ends in 2026)."""

from importlib.metadata import requires

import qtpy
from packaging.requirements import Requirement

from .conftest import notifications_since


def test_no_qt_binding_is_a_requirement_and_setup_installs_a_supported_one():
    required = [Requirement(r) for r in requires("napari-alignflow") if "extra ==" not in r]
    bindings = {"pyqt5", "pyqt6", "pyside2", "pyside6"}  # by distribution name: pyqtgraph is a plotting library
    assert not [str(r) for r in required if r.name.lower() in bindings], required
    assert qtpy.API_NAME in ("PyQt6", "PySide6")


def test_napari_starts_without_a_deprecation_notice(make_napari_viewer, qtbot, monkeypatch):
    from napari._qt import qt_main_window

    # napari's test fixtures silence the notice; put back napari's own rule (shown on PyQt5) so the test can fail
    monkeypatch.setattr(qt_main_window, "SHOW_QT_WARNING", qtpy.QT5)
    seen = len(notifications_since(0))
    viewer = make_napari_viewer(show=True)
    qtbot.waitExposed(viewer.window._qt_window)
    assert not [m for m in notifications_since(seen) if "deprecated" in m.lower()]
