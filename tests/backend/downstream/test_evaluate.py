"""evaluate-segmentation end to end on a few real Kvasir-SEG pairs (+ colour-shifted ones as the synthetic set)."""

import json

import pytest
import torch

from alignflow.cli import main
from alignflow.downstream import DownstreamConfig, evaluate_segmentation
from alignflow.downstream.models import load_model
from alignflow.errors import InputError
from alignflow.runs.events import read_events

SMALL_UNET = {"channels": [8, 16, 32, 64], "num_res_units": 1}
TINY_SEGFORMER = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 16}
TINY_MEDFLOWSEG = {"model": {"channels": [8, 8, 16, 16], "token_dim": 16, "time_embed_dim": 16, "fa_layers": 1, "attention_heads": 2},
                   "num_samples": 2, "num_steps": 2}


def tiny(out, train, test_folder, **values) -> DownstreamConfig:
    defaults = dict(train=str(train), test={"kvasir": str(test_folder)}, out=str(out), model="unet", model_options=dict(SMALL_UNET),
                    steps=6, batch_size=4, resolution=32, device="cpu", seed=3, log_every=1, checkpoint_every=100, preview_every=100)
    return DownstreamConfig.from_dict({**defaults, **values})


def synthetic_fractions(out) -> list[float]:
    return [event["synthetic_fraction"] for event in read_events(out) if event["type"] == "progress" and event.get("stage") == "downstream"]


def test_unet_run_writes_splits_and_results_and_honours_the_share(tmp_path, kvasir_train, kvasir_test, synthetic_pairs):
    config = tiny(tmp_path / "run", kvasir_train, kvasir_test, synthetic=str(synthetic_pairs), synthetic_share=0.5)
    results = evaluate_segmentation(config)
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == json.loads(json.dumps(results))
    block = results["test"]["kvasir"]
    assert block["count"] == 4 and len(block["per_image"]) == 4 and 0 <= block["dice"] <= 1 and block["dice_std"] >= 0
    assert {"dice", "dice_std", "iou", "iou_std", "hd95", "hd95_undefined", "per_class", "per_image"} <= set(block)
    assert results["real_pairs"] == 8 and results["synthetic_pairs"] == 4 and results["train_seconds"] > 0
    assert results["config"]["synthetic_share"] == 0.5
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert len(splits["train"]) == 8 and [row["stem"] for row in splits["synthetic"]] == [f"synthetic_{i:03d}" for i in range(4)]
    assert [row["stem"] for row in splits["test"]["kvasir"]] == [row["stem"] for row in block["per_image"]]
    assert all(row["image"].startswith("/") for row in splits["train"])
    assert synthetic_fractions(tmp_path / "run") == [0.5] * 6  # 2 of every 4
    assert len(list((tmp_path / "run" / "predictions" / "kvasir").glob("*.png"))) == 4
    model, info = load_model(tmp_path / "run")
    assert info["synthetic_pairs"] == 4 and model.config.resolution == 32
    # The same config again (folders spelled differently): the stored results, nothing retrained.
    events_before = (tmp_path / "run" / "events.jsonl").read_text()
    assert evaluate_segmentation(config) == results
    respelled = DownstreamConfig.from_dict({**config.to_dict(), "train": str(kvasir_train / "images" / "..")})
    assert evaluate_segmentation(respelled) == results
    assert (tmp_path / "run" / "events.jsonl").read_text() == events_before


def test_same_seed_same_result_and_resume_continues_the_same_run(tmp_path, kvasir_train, kvasir_test):
    first = evaluate_segmentation(tiny(tmp_path / "a", kvasir_train, kvasir_test, checkpoint_every=3))
    again = evaluate_segmentation(tiny(tmp_path / "b", kvasir_train, kvasir_test, checkpoint_every=3))
    assert first["test"] == again["test"]

    class Stop(Exception):
        pass

    def stop_at_first_checkpoint(event):
        if event["type"] == "checkpoint":
            raise Stop

    interrupted = tiny(tmp_path / "c", kvasir_train, kvasir_test, checkpoint_every=3)
    with pytest.raises(Stop):
        evaluate_segmentation(interrupted, [stop_at_first_checkpoint])
    with pytest.raises(InputError, match="--resume"):
        evaluate_segmentation(interrupted)
    resumed = evaluate_segmentation(interrupted, resume=True)
    assert any(event["type"] == "resume" and event["step"] == 3 for event in read_events(tmp_path / "c"))
    assert resumed["test"] == first["test"]
    weights = [load_model(tmp_path / name)[0].state_dict() for name in ("a", "c")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_segformer_pretrains_on_synthetic_then_mixes(tmp_path, kvasir_train, kvasir_test, synthetic_pairs):
    config = tiny(tmp_path / "run", kvasir_train, kvasir_test, model="segformer", model_options=TINY_SEGFORMER,
                  synthetic=str(synthetic_pairs), synthetic_share=0.25, pretrain_synthetic_steps=3, steps=4)
    results = evaluate_segmentation(config)
    assert synthetic_fractions(tmp_path / "run") == [1.0] * 3 + [0.25] * 4
    assert results["test"]["kvasir"]["count"] == 4 and results["model"] == "segformer"
    model, _ = load_model(tmp_path / "run")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2, 32, 32)  # logits upsampled from 1/4 to the input size


def test_medflowseg_trains_and_is_scored(tmp_path, kvasir_train, kvasir_test, synthetic_pairs):
    config = tiny(tmp_path / "run", kvasir_train, kvasir_test, model="medflowseg", model_options=TINY_MEDFLOWSEG,
                  synthetic=str(synthetic_pairs), synthetic_share=0.5, steps=3)
    results = evaluate_segmentation(config)
    info = json.loads((tmp_path / "run" / "segmenter" / "segmenter.json").read_text())["_info"]
    assert info["pairs"] == 8 + 8  # 8 real + 4 synthetic cycled to 8: half of every batch in expectation
    assert results["test"]["kvasir"]["count"] == 4 and results["model_folder"].endswith("segmenter")


def test_cli_prints_a_table(tmp_path, kvasir_train, kvasir_test, capsys):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"model_options": SMALL_UNET, "checkpoint_every": 100, "preview_every": 100}))
    code = main(["evaluate-segmentation", "--config", str(config), "--train", str(kvasir_train), "--test", f"held-out={kvasir_test}",
                 "--model", "unet", "--steps", "2", "--batch-size", "2", "--resolution", "32", "--out", str(tmp_path / "run"), "--device", "cpu"])
    output = capsys.readouterr().out
    assert code == 0 and "held-out" in output and "Dice" in output and "results written to" in output


@pytest.mark.parametrize(("values", "named"), [
    ({"synthetic_share": 1.0, "synthetic": "SYN"}, "--synthetic-share"),
    ({"synthetic_share": 0.3}, "--synthetic-share"),
    ({"pretrain_synthetic_steps": 5}, "--pretrain-synthetic-steps"),
    ({"model": "resnet"}, "--model"),
    ({"test": {}}, "--test"),
    ({"test": {"nowhere": "/does/not/exist"}}, "nowhere"),
    ({"steps": 0}, "--steps"),
    ({"precision": "fp8"}, "--precision"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_named(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, values, named):
    if values.get("synthetic") == "SYN":
        values = {**values, "synthetic": str(synthetic_pairs)}
    with pytest.raises(InputError, match=named):
        tiny(tmp_path / "run", kvasir_train, kvasir_test, **values)


def test_bad_input_at_run_time_is_named(tmp_path, kvasir_train, kvasir_test, capsys):
    (tmp_path / "half" / "images").mkdir(parents=True)
    (tmp_path / "half" / "masks").mkdir()
    with pytest.raises(InputError, match="--test broken"):
        evaluate_segmentation(tiny(tmp_path / "a", kvasir_train, kvasir_test, test={"broken": str(tmp_path / "half")}))
    with pytest.raises(InputError, match="model_options"):
        evaluate_segmentation(tiny(tmp_path / "b", kvasir_train, kvasir_test, model_options={"layers": 3}))
    evaluate_segmentation(tiny(tmp_path / "c", kvasir_train, kvasir_test, steps=1))
    with pytest.raises(InputError, match="another configuration"):
        evaluate_segmentation(tiny(tmp_path / "c", kvasir_train, kvasir_test, steps=2))
    assert main(["evaluate-segmentation", "--train", str(kvasir_train), "--test", "no-folder", "--out", str(tmp_path / "d")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
