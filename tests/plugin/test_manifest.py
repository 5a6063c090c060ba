"""The npe2 manifest is valid and every contribution it names imports."""

import npe2


def test_manifest_validates_and_names_importable_commands():
    manifest = npe2.PluginManifest.from_distribution("napari-alignflow")
    assert manifest.display_name == "AlignFlow"
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"References", "Training", "Synthetic masks", "Generate images", "Segmentation", "Export"}
    for command in manifest.contributions.commands:
        assert command.exec is not None or command.python_name
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute)), command.id
