"""Evaluate tab on pairs of a tiny real generator: KID and reward MMD to real CVC-ClinicDB references beside the real
Kvasir source (the baseline), per-image fidelity (tiny real evaluator) and distance to the references as sortable
columns, the Dice of quick segmenters with and without the pairs, and an augment report's comparison."""

import json
import math

import numpy as np
import pytest

from alignflow.errors import InputError
from napari_alignflow.session import session_for
from napari_alignflow.widgets.evaluation import EvaluationWidget, nearest_reference_distance
from napari_alignflow.widgets.generation import GenerationWidget

from ..conftest import wait_for_worker


@pytest.fixture
def evaluated(make_napari_viewer, image_generator, fidelity_evaluator, clinicdb_small, kvasir_small, monkeypatch,
              tmp_path, qtbot):
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    generation, evaluation = GenerationWidget(viewer), EvaluationWidget(viewer)
    for widget in (generation, evaluation):
        viewer.window.add_dock_widget(widget)
    masks = np.zeros((4, 48, 64), np.uint8)
    for i in range(4):
        masks[i, 6 * i:20 + 6 * i, 10:40] = 1
    viewer.add_labels(masks, name="drawn")
    generation.generator.setText(str(image_generator))
    generation.steps.setValue(2)
    generation.device.setCurrentText("cpu")
    wait_for_worker(qtbot, generation.generate(), timeout_ms=120_000)
    evaluation.references.setText(str(clinicdb_small / "images"))
    evaluation.source.setText(str(kvasir_small))
    evaluation.evaluator.setText(str(fidelity_evaluator))
    evaluation.size.setValue(64)
    evaluation.device.setCurrentText("cpu")
    return viewer, evaluation


def test_distances_to_the_references_with_the_source_as_baseline_and_per_image_columns(evaluated, qtbot):
    viewer, widget = evaluated
    wait_for_worker(qtbot, widget.evaluate(), timeout_ms=300_000)
    report = widget.result.report
    generated, baseline = report["generated_to_target"], report["source_to_target"]
    assert math.isfinite(generated["kid"]) and math.isfinite(baseline["kid"])
    text = widget.summary.text()
    assert f"KID to the references: {generated['kid']:.4f}" in text and f"Real source images: KID {baseline['kid']:.4f}" in text
    assert widget.table.rowCount() == 4 and session_for(viewer).state.evaluation is report
    fidelity = [widget.table.item(row, 1).text() for row in range(4)]
    assert all(0.0 <= float(value) <= 1.0 for value in fidelity)  # the evaluator's Dice of each image to its mask
    assert all(float(widget.table.item(row, 2).text()) > 0 for row in range(4))
    widget.table.sortItems(2)
    distances = [float(widget.table.item(row, 2).text()) for row in range(4)]
    assert distances == sorted(distances)


def test_nearest_reference_distance_is_relative_to_the_references_spacing():
    references = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    generated = np.array([[0.0, 0.0], [3.0, 0.0]])
    # spacing: each reference's nearest other reference is 1, 1 and 2 away -> median 1
    np.testing.assert_allclose(nearest_reference_distance(generated, references), [0.0, 2.0])


def test_dice_with_and_without_the_pairs_on_labelled_target_scans(evaluated, clinicdb_small, qtbot):
    viewer, widget = evaluated
    widget.labelled.setText(str(clinicdb_small))
    widget.downstream_steps.setValue(10)
    widget.downstream_resolution.setValue(32)
    widget.downstream_runs.setValue(2)
    wait_for_worker(qtbot, widget.evaluate_downstream(), timeout_ms=300_000)
    results = widget.downstream
    real, both = results["real_only"]["per_seed"], results["with_synthetic"]["per_seed"]
    assert results["count"] == 6 and len(real) == len(both) == 2
    assert results["gain"] == pytest.approx((both[0] - real[0] + both[1] - real[1]) / 2) and results["gain_se"] is not None
    summary = widget.summary.text()
    assert "Labelled target scans (6 images, 2 paired runs)" in summary and f"gain {results['gain']:+.3f} ± {results['gain_se']:.3f}" in summary
    assert "10 steps per run" in summary


def test_a_labelled_folder_without_masks_is_named_before_anything_trains(evaluated, tmp_path):
    viewer, widget = evaluated
    (tmp_path / "scans" / "images").mkdir(parents=True)
    widget.labelled.setText(str(tmp_path / "scans"))
    with pytest.raises(InputError, match="masks"):
        widget.evaluate_downstream()
    assert widget.downstream_button.isEnabled() and widget.downstream is None


def test_an_augment_reports_comparison_is_listed(evaluated, tmp_path):
    viewer, widget = evaluated
    from alignflow.augment.advice import Evidence, advise

    report = {"kid_target": "target images", "models": {
        "stage1": {"kid": 0.2031, "kid_std": 0.01, "generated": 32},
        "aligned": {"kid": 0.1142, "kid_std": 0.012, "generated": 32, "mask_fidelity": {"dice": 0.71},
                    "kid_references": 0.12, "reward_mmd": 0.2345},
        "fda": {"kid": 0.1, "kid_std": 0.01, "generated": 32, "kid_references": 0.09, "reward_mmd": 0.3}}}
    report["advice"] = advise(report, (Evidence("reward_mmd", "the reward MMD", 0.9, 9, "a test"),))
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "report.json").write_text(json.dumps(report))
    widget.report.setText(str(tmp_path / "job"))
    text = widget.show_report()
    assert "stage1: KID 0.2031" in text and "aligned: KID 0.1142" in text and "mask fidelity Dice 0.710" in text
    assert "reward MMD to the references 0.2345" in text and "Advice: try aligned first" in text
    widget.report.setText(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="nothing"):
        widget.show_report()
