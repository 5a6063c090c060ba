"""The npe2 manifest is valid and every contribution it names imports."""

import npe2


def test_manifest_validates_and_names_importable_commands():
    manifest = npe2.PluginManifest.from_distribution("napari-alignflow")
    assert manifest.display_name == "AlignFlow"
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"AlignFlow (all steps)", "References", "Training", "Synthetic masks", "Generate images", "Curate",
                       "Evaluate", "Segmentation", "Export"}
    # Folders only: a "*" file pattern made AlignFlow a candidate for every dropped file (napari then asks which reader)
    folder_reader = next(r for r in manifest.contributions.readers if r.accepts_directories)
    assert folder_reader.filename_patterns == []
    for command in manifest.contributions.commands:
        assert command.exec is not None or command.python_name
        module, _, attribute = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attribute]), attribute)), command.id
