"""The augment report's advice: the sets ranked by the label-free score our benchmarks found predictive, or a plain
"none predicted it" when no score did."""

from alignflow.augment.advice import TRUSTED_RHO, Evidence, advise

REPORT = {"models": {
    "fda": {"kid_references": 0.05, "reward_mmd": 0.30, "mask_fidelity": {"dice": 0.70}, "exported": True},
    "histogram": {"kid_references": 0.02, "reward_mmd": 0.40, "mask_fidelity": {"dice": 0.60}, "exported": True},
    "aligned": {"kid_references": 0.09, "reward_mmd": 0.10, "mask_fidelity": {"dice": 0.90}, "exported": True},
    "stage1": {"kid_references": 0.01, "reward_mmd": 0.01, "exported": False},  # not exported: not a candidate
}}


def evidence(score: str, rho: float) -> Evidence:
    return Evidence(score, score.replace("_", " "), rho, 9, "polyp, full regime")


def test_the_sets_are_ranked_by_the_most_predictive_score_in_its_direction():
    lines = advise(REPORT, (evidence("kid_references", 0.3), evidence("mask_fidelity", 0.8)))
    assert lines[0].startswith("Advice: try aligned first")  # the highest fidelity, though its KID is the worst
    assert lines[0].index("aligned") < lines[0].index("fda 0.7") < lines[0].index("histogram 0.6")
    assert "stage1" not in lines[0] and "+0.80" in lines[1]
    lines = advise(REPORT, (evidence("kid_references", 0.9), evidence("reward_mmd", 0.7)))
    assert lines[0].startswith("Advice: try histogram first")  # lower KID is closer


def test_no_score_trusted_below_the_threshold_and_no_advice_for_one_set_or_no_evidence():
    lines = advise(REPORT, (evidence("kid_references", TRUSTED_RHO - 0.01), evidence("reward_mmd", -0.4)))
    assert len(lines) == 1 and lines[0].startswith("No label-free score predicted the gain") and "evaluate-segmentation --paired-runs" in lines[0]
    assert advise({"models": {"fda": REPORT["models"]["fda"]}}, (evidence("reward_mmd", 0.9),)) == []
    assert advise(REPORT, ())[0].startswith("No advice yet")


def test_a_better_score_missing_from_the_report_falls_back_to_the_next_trusted_one_and_says_how_to_get_it():
    without_fidelity = {"models": {name: {k: v for k, v in entry.items() if k != "mask_fidelity"} for name, entry in REPORT["models"].items()}}
    lines = advise(without_fidelity, (evidence("mask_fidelity", 0.8), evidence("reward_mmd", 0.7), evidence("kid_references", 0.5)))
    assert lines[0].startswith("Advice: try aligned first; by reward mmd")  # the lowest reward MMD of the exported sets
    assert "Mask fidelity predicted better" in lines[1] and "--evaluator" in lines[1]
    lines = advise(without_fidelity, (evidence("mask_fidelity", 0.8), evidence("kid_references", 0.5)))
    assert len(lines) == 1 and lines[0].startswith("No trusted label-free score is in this report") and "--evaluator" in lines[0]
    assert "predicted better" not in advise(REPORT, (evidence("mask_fidelity", 0.8), evidence("reward_mmd", 0.7)))[1]
