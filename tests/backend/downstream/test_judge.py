"""The precise downstream judge: learning-rate schedule, EMA, paired batches and the learning curve."""

import math

import pytest
import torch

from alignflow.downstream import DownstreamConfig, evaluate_segmentation
from alignflow.downstream.models import load_model
from alignflow.downstream.training import PairedBatches
from alignflow.errors import InputError
from alignflow.runs.events import read_events

SMALL_UNET = {"channels": [8, 16, 32, 64], "num_res_units": 1}


def tiny(out, train, test_folder, **values) -> DownstreamConfig:
    """test_evaluate.py's tiny run (backend test folders are not packages, so it cannot be imported from there)."""
    defaults = dict(train=str(train), test={"kvasir": str(test_folder)}, out=str(out), model="unet", model_options=dict(SMALL_UNET),
                    steps=6, batch_size=4, resolution=32, device="cpu", seed=3, log_every=1, checkpoint_every=100, preview_every=100)
    return DownstreamConfig.from_dict({**defaults, **values})

JUDGE = dict(lr_schedule="cosine", warmup_steps=2, ema_decay=0.9, paired_batches=True)


def schedule(**values) -> DownstreamConfig:
    return DownstreamConfig(train="T", test={}, out="O", steps=100, lr=1e-3, **values)


def test_the_learning_rate_warms_up_then_decays_along_a_half_cosine():
    config = schedule(lr_schedule="cosine", warmup_steps=10)
    rates = [config.learning_rate_at(step) for step in range(1, 101)]
    assert rates[4] == pytest.approx(0.5e-3) and rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and 0 < rates[-1] < 1e-5
    middle = 10 + (100 - 10 + 1) / 2  # the half-way point of the decay: lr / 2
    assert config.learning_rate_at(math.floor(middle)) > 0.5e-3 > config.learning_rate_at(math.ceil(middle))
    assert {schedule().learning_rate_at(step) for step in (1, 50, 100)} == {1e-3}  # constant, no warm-up: as before
    assert schedule(warmup_steps=4).learning_rate_at(2) == pytest.approx(0.5e-3)


def test_paired_batches_share_data_order_and_flips_across_synthetic_shares():
    batches = PairedBatches(real_count=10, synthetic_count=6, batch_size=8, seed=0)
    for step in range(1, 30):
        real_only, none = batches.draw(step, 0.0)
        mixed, synthetic = batches.draw(step, 0.25)
        assert len(none) == 0 and len(real_only) == 8 and len(synthetic) == 2 and (synthetic < 6).all()
        assert torch.equal(mixed, real_only[:6])  # the same real pairs, minus the ones synthetic pairs replace
    # A real-only arm sees each real pair once per epoch (40 positions = 4 epochs of 10 pairs).
    seen = torch.cat([batches.draw(step, 0.0)[0] for step in range(1, 6)])
    assert all(sorted(seen[e * 10:(e + 1) * 10].tolist()) == list(range(10)) for e in range(4))
    # A function of (seed, step) only: drawn in another order (a resumed run) it is the same; another seed differs.
    again = PairedBatches(10, 6, 8, seed=0)
    assert all(torch.equal(again.draw(step, 0.25)[0], batches.draw(step, 0.25)[0]) for step in (17, 3, 9))
    assert torch.equal(torch.rand(8, generator=again.flips(5)), torch.rand(8, generator=batches.flips(5)))
    other = PairedBatches(10, 6, 8, seed=1)
    assert not all(torch.equal(other.draw(step, 0.0)[0], batches.draw(step, 0.0)[0]) for step in range(1, 4))


def test_the_exported_ema_is_the_validated_model_and_resume_reproduces_the_run(tmp_path, kvasir_train, kvasir_test, synthetic_pairs):
    values = dict(JUDGE, synthetic=str(synthetic_pairs), synthetic_share=0.5, validation={"held": str(kvasir_test)}, validate_every=2,
                  checkpoint_every=3)
    results = evaluate_segmentation(tiny(tmp_path / "a", kvasir_train, kvasir_test, **values))
    assert [row["step"] for row in results["curve"]] == [2, 4, 6] and all(0 <= row["held"] <= 1 for row in results["curve"])
    # The validation set is the test set here: the last point of the curve is the scored (exported) model's Dice.
    assert results["curve"][-1]["held"] == pytest.approx(results["test"]["kvasir"]["dice"], abs=1e-6)
    rates = [event["lr"] for event in read_events(tmp_path / "a") if event["type"] == "progress" and event.get("stage") == "downstream"]
    assert rates[0] == pytest.approx(0.5e-3) and rates[1] == pytest.approx(1e-3) and rates[-1] < rates[2] < 1e-3

    class Stop(Exception):
        pass

    def stop_at_first_checkpoint(event):
        if event["type"] == "checkpoint":
            raise Stop

    interrupted = tiny(tmp_path / "b", kvasir_train, kvasir_test, **values)
    with pytest.raises(Stop):
        evaluate_segmentation(interrupted, [stop_at_first_checkpoint])
    resumed = evaluate_segmentation(interrupted, resume=True)
    assert resumed["test"] == results["test"] and resumed["curve"] == results["curve"]
    weights = [load_model(tmp_path / name)[0].state_dict() for name in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_without_ema_the_network_itself_is_exported_and_the_ema_differs_from_it(tmp_path, kvasir_train, kvasir_test):
    plain = evaluate_segmentation(tiny(tmp_path / "plain", kvasir_train, kvasir_test, lr_schedule="cosine"))
    averaged = evaluate_segmentation(tiny(tmp_path / "ema", kvasir_train, kvasir_test, lr_schedule="cosine", ema_decay=0.9))
    net = load_model(tmp_path / "plain")[0].state_dict()
    ema = load_model(tmp_path / "ema")[0].state_dict()
    assert "curve" not in plain and not all(torch.equal(net[key], ema[key]) for key in net)  # same seed and batches
    assert averaged["config"]["ema_decay"] == 0.9


@pytest.mark.parametrize(("values", "named"), [
    ({"lr_schedule": "step"}, "--lr-schedule"),
    ({"warmup_steps": 6}, "--warmup-steps"),
    ({"ema_decay": 1.0}, "--ema-decay"),
    ({"validate_every": 2}, "--validate-every"),
    ({"validation": {"held": "/does/not/exist"}}, "--validation held"),
    ({"paired_batches": True, "synthetic": "SYN"}, "--paired-batches"),
    ({"model": "medflowseg", "ema_decay": 0.99}, "--ema-decay"),
])
def test_bad_judge_settings_are_named(tmp_path, kvasir_train, kvasir_test, synthetic_pairs, values, named):
    if values.get("synthetic") == "SYN":
        values = {**values, "synthetic": str(synthetic_pairs)}
    with pytest.raises(InputError, match=named):
        tiny(tmp_path / "run", kvasir_train, kvasir_test, **values)


def test_test_time_flips_make_predictions_flip_equivariant(tmp_path, kvasir_train, kvasir_test):
    from alignflow.data import load_pairs, scan_dataset
    from alignflow.downstream.models import predict_labels

    evaluate_segmentation(tiny(tmp_path / "run", kvasir_train, kvasir_test, steps=4))
    model, _ = load_model(tmp_path / "run")
    images, _ = load_pairs(scan_dataset(kvasir_test), 32)
    for dims in ((-1,), (-2,)):
        averaged = predict_labels(model, images.flip(dims), test_time_flips=True)
        assert (averaged == predict_labels(model, images, test_time_flips=True).flip(dims)).float().mean() > 0.999
    plain = predict_labels(model, images)
    assert torch.equal(plain, model.predict(images)) and not torch.equal(plain.flip(-1), predict_labels(model, images.flip(-1)))


def test_a_finished_evaluation_is_scored_again_with_test_time_flips_without_training(tmp_path, kvasir_train, kvasir_test):
    plain = evaluate_segmentation(tiny(tmp_path / "run", kvasir_train, kvasir_test))
    weights = load_model(tmp_path / "run")[0].state_dict()
    flipped = evaluate_segmentation(tiny(tmp_path / "run", kvasir_train, kvasir_test, test_time_flips=True))
    assert [e["type"] for e in read_events(tmp_path / "run")].count("start") == 1  # trained once
    assert flipped["config"]["test_time_flips"] and flipped["test"]["kvasir"]["dice"] != plain["test"]["kvasir"]["dice"]
    assert all(torch.equal(weights[key], value) for key, value in load_model(tmp_path / "run")[0].state_dict().items())
    with pytest.raises(InputError, match="another configuration"):
        evaluate_segmentation(tiny(tmp_path / "run", kvasir_train, kvasir_test, test_time_flips=True, steps=7))
