"""Drops that open at once: napari asks "choose reader" whenever two plugins can read a path, and its own reader
also claims folders, .dcm and .nii(.gz). Once the user opens the AlignFlow dock, AlignFlow becomes napari's
remembered reader for these, exactly what ticking "remember this choice" in napari's dialog would store, and only
where the user has not chosen a reader already (Preferences > Plugins lists and changes them).

Folders go to AlignFlow only when no plugin other than napari's own reads folders: the folder reader hands every
folder it does not know (e.g. .zarr) back to napari's reader, so nothing napari opened before stops opening.
"""

from __future__ import annotations

PLUGIN = "napari-alignflow"
FILE_PATTERNS = ("*.dcm", "*.dicom", "*.nii", "*.nii.gz")
FOLDER_PATTERN = "*/"  # napari matches a dropped folder as "PATH/"
BUILTINS = "napari"


def folder_readers() -> set[str]:
    """Plugins with a reader for folders."""
    from npe2 import PluginManager

    return {reader.plugin_name for reader in PluginManager.instance().iter_compatible_readers([_a_folder()])}


def _a_folder() -> str:
    import tempfile

    return tempfile.gettempdir()


def prefer_alignflow_readers() -> list[str]:
    """Make AlignFlow the remembered reader where the user has not chosen one; returns the patterns it set."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    wanted = list(FILE_PATTERNS)
    if folder_readers() <= {PLUGIN, BUILTINS}:
        wanted.append(FOLDER_PATTERN)
    added = [pattern for pattern in wanted if pattern not in current]
    if added:
        plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN)}
    return added
