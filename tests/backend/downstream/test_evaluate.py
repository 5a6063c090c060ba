"""evaluate-segmentation end to end on a few real Kvasir-SEG pairs (+ colour-shifted ones as the synthetic set)."""

import json

import pytest
import torch

from alignflow.cli import main
from alignflow.downstream import DownstreamConfig, evaluate_segmentation
from alignflow.downstream.evaluate import equal_shares
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


def test_several_synthetic_folders_get_equal_shares(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, capsys):
    """Two folders of 4 and 2 pairs (say, a method's set and a few labelled target images): the smaller one is
    repeated, so the trainer draws from a pool of 4 + 2 x 2; splits.json lists each file once."""
    labelled = tmp_path / "labelled_target"
    for sub in ("images", "masks"):
        (labelled / sub).mkdir(parents=True)
        for path in sorted((kvasir_test / sub).iterdir())[:2]:
            (labelled / sub / path.name).symlink_to(path)
    config = tiny(tmp_path / "run", kvasir_train, kvasir_test, synthetic=[str(synthetic_pairs), str(labelled)], synthetic_share=0.5)
    results = evaluate_segmentation(config)
    assert results["synthetic_pairs"] == 6 and results["config"]["synthetic"] == [str(synthetic_pairs), str(labelled)]
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert [row["stem"] for row in splits["synthetic"]] == [f"synthetic_{i:03d}" for i in range(4)] + sorted(
        path.stem for path in (labelled / "images").iterdir())
    _, info = load_model(tmp_path / "run")
    assert info["synthetic_pairs"] == 8  # the trainer's pool: 4 + 2 repeated twice
    assert synthetic_fractions(tmp_path / "run") == [0.5] * 6
    # One folder given as a list is the run of the same folder given as a string (its stored results, not another config).
    single = evaluate_segmentation(tiny(tmp_path / "one", kvasir_train, kvasir_test, synthetic=str(labelled), synthetic_share=0.5, steps=1))
    assert evaluate_segmentation(tiny(tmp_path / "one", kvasir_train, kvasir_test, synthetic=[str(labelled)], synthetic_share=0.5,
                                      steps=1)) == single
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(InputError, match="empty/images"):  # a set with no pairs is named (scan_dataset), never divided by
        evaluate_segmentation(tiny(tmp_path / "bad", kvasir_train, kvasir_test, synthetic=[str(labelled), str(tmp_path / "empty")]))
    # The command line takes both folders after one --synthetic.
    code = main(["evaluate-segmentation", "--train", str(kvasir_train), "--test", f"kvasir={kvasir_test}", "--synthetic",
                 str(synthetic_pairs), str(labelled), "--synthetic-share", "0.5", "--model", "unet", "--steps", "2", "--batch-size", "4",
                 "--resolution", "32", "--out", str(tmp_path / "cli"), "--device", "cpu"])
    assert code == 0 and "6 synthetic pairs" in capsys.readouterr().out


def test_equal_shares_repeats_the_smaller_sets():
    small = (torch.zeros(10, 3, 4, 4), torch.zeros(10, 4, 4, dtype=torch.long))
    large = (torch.ones(300, 3, 4, 4), torch.ones(300, 4, 4, dtype=torch.long))
    images, masks = equal_shares([small, large], 4)
    assert len(images) == len(masks) == 600 and int(masks[:, 0, 0].sum()) == 300  # 30 x 10 and 1 x 300
    assert equal_shares([large], 4)[0] is not None and len(equal_shares([large], 4)[0]) == 300
    assert len(equal_shares([], 4)[0]) == 0


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
    ({"synthetic": ["SYN", "SYN"]}, "--synthetic"),
    ({"synthetic": []}, "--synthetic"),
])
def test_bad_input_is_named(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, values, named):
    if values.get("synthetic") == "SYN":
        values = {**values, "synthetic": str(synthetic_pairs)}
    if isinstance(values.get("synthetic"), list):
        values = {**values, "synthetic": [str(synthetic_pairs) for _ in values["synthetic"]]}
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
