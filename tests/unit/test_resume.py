"""Exact resume: a run interrupted and resumed ends where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dckd.config import load_config
from dckd.training.checkpoint import safe_load
from dckd.training.loop import checkpoint_path, latest_checkpoint, train_local
from tests.conftest import tiny_config_dict


def _parts(ckpt: Path) -> dict[str, Any]:
    """The parts of a checkpoint this test compares; the only place that knows its keys (format v2)."""
    state = safe_load(ckpt)
    dcr = state["terms"]["dcr"]
    return {
        "iteration": state["iteration"],
        "student": state["student"],
        "ema": state["ema"],
        "history": dcr["history"],
        "history_state": dcr["schedule"],
    }


TOTAL, STOP, EVERY, MILESTONE = 40, 20, 3, 12
# The schedule rule worked out by hand: step s(t) = EVERY * (1 + milestones below t), update when
# t % s(t) == 0. So every 3 steps up to and including 12, every 6 after it.
UPDATES = [3, 6, 9, 12, 18, 24, 30, 36]


def _schedule_state(upto: int) -> dict[str, int]:
    """History schedule state after iteration ``upto``, from the hand-made list above."""
    done = [t for t in UPDATES if t <= upto]
    return {"updates": len(done), "last_update": done[-1]}


def _assert_same_tensors(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("student", "ema", "history"):
        assert a[key].keys() == b[key].keys(), key
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=0, atol=1e-6, msg=f"{key}.{name}")


def test_straight_run_equals_interrupted_and_resumed_run(tmp_path: Path, hr_folder: Path) -> None:
    """DCKD* with the history step growing at 12; interrupted at 20, between the updates at 18 and 24.

    A checkpoint between two updates means the resumed run must carry the schedule state (and the
    history weights blended at 18) over from the checkpoint, not rebuild them from the iteration.
    """
    assert MILESTONE < STOP and STOP not in UPDATES, "the premise: growth crossed, stop between two updates"
    base = tiny_config_dict(hr_folder, tmp_path / "straight", method="dckd_star", iterations=TOTAL,
                            ckpt_every=10, val_every=TOTAL, log_every=10, keep_checkpoints=TOTAL)
    base["method"]["dcr"]["history"] = {"update_every": EVERY, "growth_milestones": [MILESTONE]}
    # Explicit small architectures (the same code path as presets) keep the steps cheap.
    small = {"backbone": "rcan", "args": {"scale": 2, "n_feats": 8, "n_resgroups": 1, "n_resblocks": 2,
                                          "reduction": 4}}
    base["teacher"], base["student"] = dict(small), dict(small)
    base["vqgan"]["ch_mult"] = [1, 1, 1, 1, 1]
    base["train"]["frozen_chunk_rows"] = 64  # one frozen encoder pass (the chunked path is tested elsewhere)

    straight = train_local(load_config(data=base), resume=True, progress=False)
    assert straight["finished"] and straight["iteration"] == TOTAL

    split_dir = tmp_path / "split"
    split = dict(base, output_dir=str(split_dir))
    first = train_local(load_config(data=split), resume=True, stop_at=STOP, progress=False)
    assert first["iteration"] == STOP and not first["finished"]
    at_stop = _parts(checkpoint_path(split_dir, STOP))
    assert at_stop["history_state"] == _schedule_state(STOP) == {"updates": 5, "last_update": 18}
    _assert_same_tensors(_parts(checkpoint_path(tmp_path / "straight", STOP)), at_stop)
    second = train_local(load_config(data=split), resume=True, progress=False)
    assert second["iteration"] == TOTAL and second["finished"]

    a, b = _parts(latest_checkpoint(tmp_path / "straight")), _parts(latest_checkpoint(split_dir))
    assert a["iteration"] == b["iteration"] == TOTAL
    assert a["history_state"] == b["history_state"] == _schedule_state(TOTAL) == {"updates": 8, "last_update": 36}
    _assert_same_tensors(a, b)
    assert straight["val"]["crops"]["psnr"] == pytest.approx(second["val"]["crops"]["psnr"], abs=1e-6)
    for run in (tmp_path / "straight", split_dir):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["iter"] for r in rows if r["kind"] == "train"] == [10, 20, 30, 40], run.name
