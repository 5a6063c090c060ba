"""The one rule for output folders (issue 18): no command deletes what it did not create."""

from __future__ import annotations

import pytest

from alignflow.errors import InputError
from alignflow.runs.outputs import check_output_folder, mark_output


def test_a_new_or_empty_folder_is_fine_and_a_full_one_needs_overwrite(tmp_path):
    assert check_output_folder(tmp_path / "new", "generate") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", "generate")
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.png").write_bytes(b"x")
    with pytest.raises(InputError, match="--overwrite"):
        check_output_folder(full, "generate")
    check_output_folder(full, "generate", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="an existing file"):
        check_output_folder(tmp_path / "file", "generate", overwrite=True)


def test_a_folder_that_is_or_holds_an_input_is_refused_even_with_overwrite(tmp_path):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    mask = data / "masks" / "a.png"
    mask.write_bytes(b"x")
    for out, inputs in ((data, [data]), (data, [[mask]]), (data / "masks", {"masks": str(data), "files": [mask]}),
                        (tmp_path, {"nested": {"deep": [str(mask)]}})):
        with pytest.raises(InputError, match="holds the input"):
            check_output_folder(out, "generate", inputs=inputs, overwrite=True)
    # a new folder inside an input folder holds nothing of it
    check_output_folder(data / "synthetic", "generate", inputs=[data, mask])


def test_a_run_folder_is_refused_unless_the_command_wrote_it(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "generator").mkdir()
    with pytest.raises(InputError, match="even with --overwrite"):
        check_output_folder(run, "generate", overwrite=True)
    masks = tmp_path / "masks_out"
    masks.mkdir()
    (masks / "events.jsonl").write_text("")
    mark_output(masks, "masks")
    with pytest.raises(InputError, match="alignflow masks"):
        check_output_folder(masks, "generate", overwrite=True)
    with pytest.raises(InputError, match="--overwrite"):
        check_output_folder(masks, "masks")
    check_output_folder(masks, "masks", overwrite=True)
    check_output_folder(masks, "masks", resumable=True)
