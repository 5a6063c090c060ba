"""Typed configs (issue 18): every config rejects unknown keys and wrong types in one line naming the key, the
expected type and the value, before anything is written; text that is unambiguous is parsed ("false", "1e-4")."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from alignflow.augment.pipeline import AugmentConfig
from alignflow.cli import main
from alignflow.config import DictConfig
from alignflow.downstream.config import DownstreamConfig
from alignflow.errors import InputError
from alignflow.export.exporter import ExportConfig
from alignflow.fidelity.training import EvaluatorTrainConfig
from alignflow.generator.config import GenerateConfig, TrainConfig
from alignflow.masks.synthesis import MaskSynthesisConfig
from alignflow.masks.training import MaskTrainConfig
from alignflow.segmentation.config import SegmentConfig, SegmenterTrainConfig

CONFIGS = [TrainConfig, GenerateConfig, AugmentConfig, MaskTrainConfig, MaskSynthesisConfig, ExportConfig, SegmentConfig,
           SegmenterTrainConfig, EvaluatorTrainConfig, DownstreamConfig]


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_rejects_unknown_keys_and_wrong_types(config_class: type[DictConfig]):
    with pytest.raises(InputError, match="stepz"):
        config_class.checked_values({"stepz": 3})
    hints = typing.get_type_hints(config_class)
    integer = next((name for name, hint in hints.items() if hint is int), None)
    text = next(name for name, hint in hints.items() if hint is str)
    cases = [(text, 3, "a text value"), (text, ["a"], "a text value")]
    if integer is not None:
        cases += [(integer, "three", "an integer"), (integer, 1.7, "an integer"), (integer, True, "an integer")]
    for key, value, expected in cases:
        with pytest.raises(InputError) as error:
            config_class.checked_values({key: value})
        assert str(error.value) == f"{key}: expected {expected}, got {value!r}"


def test_text_is_parsed_where_it_is_unambiguous():
    assert ExportConfig.checked_values({"overwrite": "false"}) == {"overwrite": False}
    assert ExportConfig.checked_values({"overwrite": "True"}) == {"overwrite": True}
    assert TrainConfig.checked_values({"lr": "1e-4", "steps": "3", "references": ["a", "b"]}) == {
        "lr": 1e-4, "steps": 3, "references": ["a", "b"]}
    for bad in ("fast", "inf", "nan", float("inf")):
        with pytest.raises(InputError, match="lr: expected a number"):
            TrainConfig.checked_values({"lr": bad})
    with pytest.raises(InputError, match="overwrite: expected true or false, got 'maybe'"):
        ExportConfig.checked_values({"overwrite": "maybe"})


def test_nested_sections_are_checked_by_their_full_name():
    with pytest.raises(InputError, match=r"^train\.w_mask: expected a number, got 'x'$"):
        AugmentConfig.from_dict({"train": {"w_mask": "x"}})
    with pytest.raises(InputError, match=r"train.*mask_segmentr"):
        AugmentConfig.from_dict({"train": {"mask_segmentr": "x"}})
    with pytest.raises(InputError, match=r"^generator\.resolution: expected an integer"):
        TrainConfig.from_dict({"generator": {"resolution": "big"}})
    with pytest.raises(InputError, match=r"^train\.steps: expected an option augment does not set itself"):
        AugmentConfig.from_dict({"train": {"steps": 5}})  # was a TypeError traceback when the stages were built
    with pytest.raises(InputError, match="export_name"):
        AugmentConfig.from_dict({"export_name": "../../outside/victim_folder"})


@pytest.mark.parametrize("bad", ['steps: "three"', 'lr: "fast"', "steps: 1.7", "batch_size: true"])
def test_wrong_types_in_a_train_config_are_one_line_and_write_nothing(tmp_path, capsys, bad):
    config = tmp_path / "c.yaml"
    config.write_text(bad + "\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--source", str(tmp_path), "--out", str(out), "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    key = bad.split(":")[0]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"alignflow train: error: {key}: expected "), lines
    assert not out.exists()


def test_an_export_config_with_overwrite_false_keeps_the_destination(tmp_path, kvasir, make_pairs, capsys):
    make_pairs(kvasir, tmp_path / "real", 2)
    out = tmp_path / "exported"
    assert main(["export", "--real", str(tmp_path / "real"), "--out", str(out), "--format", "folders"]) == 0
    (out / "keep.txt").write_text("mine")
    config = tmp_path / "export.json"
    config.write_text(json.dumps({"real": str(tmp_path / "real"), "out": str(out), "format": "folders", "overwrite": "false"}))
    capsys.readouterr()
    assert main(["export", "--config", str(config)]) == 2
    assert "overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    config.write_text(json.dumps({"real": str(tmp_path / "real"), "out": str(out), "format": "folders", "overwrit": True}))
    assert main(["export", "--config", str(config)]) == 2
    assert "overwrit" in capsys.readouterr().err and (out / "keep.txt").exists()


def test_the_job_configs_sections_name_real_config_classes():
    """A section's "module:Class" must resolve (a typo would only show when a user sets that section)."""
    from dataclasses import fields

    from alignflow.config import SECTION, _section_class

    for config_class in CONFIGS:
        for field in fields(config_class):
            if SECTION in field.metadata:
                assert issubclass(_section_class(field.metadata[SECTION]), DictConfig), (config_class, field.name)


def test_generate_config_defaults_live_in_the_config_not_the_parser():
    assert GenerateConfig().steps == 28 and GenerateConfig().guidance == 2.0
    with pytest.raises(InputError, match="--generator"):
        GenerateConfig.from_dict({"masks": "m", "out": "o"})
    for key, value in (("steps", 0), ("batch_size", 0), ("limit", 0), ("limit", -1), ("candidates", 0)):
        with pytest.raises(InputError, match=f"--{key.replace('_', '-')}"):
            GenerateConfig.from_dict({"generator": "g", "masks": "m", "out": "o", key: value})
    assert Path(GenerateConfig.from_dict({"generator": "g", "masks": "m", "out": "o"}).out) == Path("o")
