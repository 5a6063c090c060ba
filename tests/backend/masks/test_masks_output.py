"""``alignflow masks`` never replaces the real masks it reads, nor a run (issue 18)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alignflow.cli import main
from alignflow.masks.training import MaskTrainConfig, train_mask_generator

TINY = {"resolution": 32, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "context_tokens": 2}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_masks_refuses_its_inputs_and_runs_and_replaces_its_own_output_only_with_overwrite(tmp_path, kvasir, make_pairs, capsys):
    data = tmp_path / "data"
    make_pairs(kvasir, data, 4)
    run = tmp_path / "maskrun"
    train_mask_generator(MaskTrainConfig(source=str(data), out=str(run), steps=1, batch_size=2, device="cpu",
                                         preview_every=100, generator=dict(TINY)))
    data_before, run_before = digest(data), digest(run)
    base = ["masks", "--generator", str(run), "--masks", str(data), "-k", "2", "--num-masks", "2", "--sample-steps", "2",
            "--device", "cpu"]
    for out in (data, data / "masks", run):
        for extra in ((), ("--overwrite",)):
            assert main([*base, "--out", str(out), *extra]) == 2, (out, extra)
            assert "alignflow masks: error:" in capsys.readouterr().err
    assert digest(data) == data_before and digest(run) == run_before
    out = tmp_path / "synthetic_masks"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
