"""The engine: history updates at the scheduled iterations, exact resume, every method trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dckd.config import load_config
from dckd.errors import CheckpointError
from dckd.training.engine import Engine
from dckd.training.loop import latest_checkpoint, make_loader, train_local
from tests.conftest import tiny_config_dict


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_history_updated_exactly_at_scheduled_iterations(tmp_path: Path, hr_folder: Path) -> None:
    # update_every 4, milestone 8: step 4 up to iteration 8, then 8 -> updates at 4, 8, 16
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", iterations=18))
    engine = Engine(cfg, notes=lambda _m: None)
    dcr = engine.terms["dcr"]
    assert dcr.schedule.update_iterations(0, 18) == [4, 8, 16]
    changed = []
    for t, batch in enumerate(make_loader(cfg, 0, 18), start=1):
        before = params(dcr.history)
        engine.train_step(batch["lq"], batch["gt"])
        after = params(dcr.history)
        if any(not torch.equal(a, b) for a, b in zip(before, after)):
            changed.append(t)
            # Eq. 6: his = 0.1 * his + 0.9 * ema, with the EMA student of this very iteration
            for b, a, e in zip(before, after, engine.ema.parameters()):
                torch.testing.assert_close(a, 0.1 * b + 0.9 * e, rtol=1e-6, atol=1e-7)
    assert changed == [4, 8, 16]
    assert (dcr.updates, dcr.last_update) == (3, 16)


def test_frozen_networks_stay_frozen_and_in_eval(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", method="dckd_star", iterations=2))
    engine = Engine(cfg, notes=lambda _m: None)
    teacher_before = params(engine.teacher)
    for batch in make_loader(cfg, 0, 2):
        terms = engine.train_step(batch["lq"], batch["gt"])
    assert set(terms) == {"rec", "kd", "dcr", "dmm", "lcr", "dukd", "total"}
    assert all(torch.isfinite(v) for v in terms.values())
    for net in (engine.teacher, engine.terms["dcr"].history, engine.vqgan, engine.ema):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, params(engine.teacher)))
    assert engine.vqgan_pretrained is False
    assert any("RANDOMLY INITIALISED" in n for n in engine.notes)


@pytest.mark.parametrize("method", ["scratch", "logits", "dckd", "dckd_star"])
def test_every_method_reduces_its_loss_terms_to_numbers(tmp_path: Path, hr_folder: Path, method: str) -> None:
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", method=method, iterations=3))
    engine = Engine(cfg, notes=lambda _m: None)
    student_before = params(engine.student)
    for batch in make_loader(cfg, 0, 3):
        terms = engine.train_step(batch["lq"], batch["gt"])
    assert set(terms) - {"total"} == set(cfg.method.enabled_terms)
    assert torch.isclose(terms["total"], sum(v for k, v in terms.items() if k != "total"))
    assert any(not torch.equal(a, b) for a, b in zip(student_before, params(engine.student)))


def test_checkpoint_is_weights_only_and_refuses_other_files(tmp_path: Path, hr_folder: Path) -> None:
    cfg = load_config(data=tiny_config_dict(hr_folder, tmp_path / "run", iterations=2, ckpt_every=1))
    train_local(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.run_dir)
    assert ckpt is not None and ckpt.name == "iter_000000002.pt"
    state = torch.load(ckpt, weights_only=True)
    assert {"student", "ema", "terms", "optimizer", "scheduler", "rng", "iteration", "config"} <= set(state)
    assert state["format"] == "dckd-checkpoint-v2" and set(state["terms"]["dcr"]) == {"history", "schedule"}
    assert not list(ckpt.parent.glob("*.tmp"))
    other = Engine(load_config(data=tiny_config_dict(hr_folder, tmp_path / "o", method="scratch")),
                   notes=lambda _m: None)
    with pytest.raises(CheckpointError, match="x.pt: has no state of the term 'dcr'"):
        Engine(cfg, notes=lambda _m: None).load_state_dict({**state, "terms": {}}, "x.pt")
    with pytest.raises(CheckpointError, match="x.pt: has no history model"):
        Engine(cfg, notes=lambda _m: None).load_state_dict({**state, "terms": {"dcr": {"history": None}}}, "x.pt")
    with pytest.raises(CheckpointError, match="not a dckd training checkpoint"):
        other.load_state_dict({"format": "something"}, "y.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        other.load(bad)
