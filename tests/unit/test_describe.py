"""The words a run, ``--check`` and the report use for the method, the schedule and the batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from dckd.config import MethodConfig, ScheduleConfig, load_config
from dckd.reporting.describe import (
    batch_note,
    batch_summary,
    method_label,
    schedule_summary,
    terms_summary,
)
from dckd.training.engine import Engine
from tests.conftest import tiny_config_dict


@pytest.mark.parametrize(("method", "label"), [
    ({"preset": "dckd"}, "dckd"),
    ({"preset": "dckd_release"}, "dckd_release"),
    ({"preset": "dckd_release", "dcr": {"enabled": False}, "dmm": {"enabled": False}}, "dckd_release (dcr off, dmm off)"),
    ({"preset": "dckd_release", "dukd": {"enabled": True}}, "dckd_release (dukd on)"),
    ({"preset": "dckd_release", "dmm": {"released_double_softmax": False}}, "dckd_release (without double-softmax DMM)"),
    ({"preset": "dckd_star", "dcr": {"degradation": {"released_shared_gray_noise": True}}},
     "dckd_star (+ shared grey noise)"),
    ({"preset": "dckd", "lcr": {"enabled": True}, "dmm": {"released_double_softmax": True}},
     "dckd (lcr on; + double-softmax DMM)"),
])
def test_method_label_names_the_preset_and_what_differs(method: dict, label: str) -> None:
    assert method_label(MethodConfig.model_validate(method)) == label


def test_terms_summary_lists_weights_in_term_order() -> None:
    m = MethodConfig.model_validate({"preset": "dckd_release", "dcr": {"num_negatives": 3, "weight": 1.0}})
    assert terms_summary(m) == "rec 1 + kd 1 + dcr 1 (N 3, noise) + dmm 0.001 + lcr 1 (p 0.5)"


@pytest.mark.parametrize(("schedule", "iterations", "text"), [
    ({"name": "multistep", "milestones": [100_000, 200_000]}, 250_000,
     "lr 0.0001, x0.1 at 100000, 200000 (of 250000 its)"),
    # the release: MultiStepLR [250000] decays from iteration 250001, after the run
    ({"name": "multistep", "milestones": [250_000]}, 250_000, "lr 0.0001, no decay within 250000 its (milestones [250000])"),
    ({"name": "multistep", "milestones": [3, 250_000]}, 250_000, "lr 0.0001, x0.1 at 3 (of 250000 its)"),
    ({"name": "multistep", "milestones": [2, 3]}, 3, "lr 0.0001, x0.1 at 2 (of 3 its)"),
    ({"name": "constant"}, 10, "lr 0.0001 constant over 10 its"),
    ({"name": "cosine", "eta_min": 1e-7}, 200_000, "lr 0.0001, cosine to 1e-07 over 200000 its"),
    ({"name": "cosine_restart", "periods": [92_000, 208_000], "eta_mins": [3e-4, 1e-6]}, 300_000,
     "lr 0.0001, cosine restarts (92000 its to 0.0003, 208000 its to 1e-06; run of 300000 its)"),
])
def test_schedule_summary(schedule: dict, iterations: int, text: str) -> None:
    assert schedule_summary(ScheduleConfig.model_validate(schedule), 1e-4, iterations) == text


def _cfg(hr: Path, tmp: Path, **train: object):
    return load_config(data=tiny_config_dict(hr, tmp / "run", **train))


def test_batch_note_only_when_the_total_differs(hr_folder: Path, tmp_path: Path) -> None:
    cfg = _cfg(hr_folder, tmp_path, batch_size=16, total_batch=64)
    assert batch_note(cfg, 4) is None and batch_summary(cfg, 4) == "16 per worker x 4 workers = 64"
    assert batch_note(cfg, 1) == ("effective batch 16 (16 per worker x 1 worker) differs from the paper's 64 "
                                  "(train.total_batch): -48 images per step, x0.25")
    assert batch_note(cfg, 8).endswith("+64 images per step, x2")
    assert batch_summary(cfg, 1) == "16 per worker x 1 worker = 16; paper 64"
    no_paper = _cfg(hr_folder, tmp_path, batch_size=16)
    assert batch_note(no_paper, 1) is None and batch_summary(no_paper, 2) == "16 per worker x 2 workers = 32"


def test_progressive_runs_compare_their_first_stage(hr_folder: Path, tmp_path: Path) -> None:
    data = tiny_config_dict(hr_folder, tmp_path / "run", total_batch=64)
    data["data"]["train"]["progressive"] = {"milestones": [5, 10], "lq_patches": [8, 12], "batch_sizes": [8, 4]}
    cfg = load_config(data=data)
    assert batch_note(cfg, 8) is None
    assert batch_summary(cfg, 4) == "8 per worker (first stage) x 4 workers = 32; paper 64"
    assert batch_note(cfg, 4).startswith("effective first-stage batch 32 (8 per worker x 4 workers)")


def test_the_engine_notes_a_batch_that_is_not_the_papers(hr_folder: Path, tmp_path: Path) -> None:
    """Printed (and kept in the run's notes) before the first step, for local and Ray runs alike."""
    cfg = _cfg(hr_folder, tmp_path, total_batch=4)
    printed: list[str] = []
    engine = Engine(cfg, notes=printed.append)
    assert engine.iteration == 0 and printed == engine.notes
    assert any(n.startswith("effective batch 2 (2 per worker x 1 worker) differs from the paper's 4") for n in printed)
    assert not any("effective batch" in n for n in Engine(cfg, notes=lambda _m: None, world_size=2).notes)
