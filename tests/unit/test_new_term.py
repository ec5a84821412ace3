"""A new loss term is one file and one registry line: a toy term, registered and trained.

The term lives in a module outside the project and registers through the ``dckd.terms``
entry point (the one line a plugin package adds to its pyproject). It runs in a subprocess,
so the registry discovers it at import as it would in a user's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import tiny_config_dict

TOY_TERM = '''
"""A toy term: pulls the mean of the student's output towards a target, and counts its steps."""

from pydantic import Field

from dckd.config.base import TermConfig
from dckd.terms.base import Term


class ToyConfig(TermConfig):
    weight: float = 0.5
    target: float = Field(default=0.25, ge=0.0, le=1.0)


class Toy(Term):
    name = "toy"
    config = ToyConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.steps = 0  # state of its own: saved in checkpoints under "toy"

    def loss(self, step):
        return self.cfg.weight * (step.out.mean() - self.cfg.target).abs()

    def after_step(self, iteration, student, ema):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state, source):
        self.steps = int(state["steps"])
'''

TRAIN = '''
import json, sys
from dckd.config import load_config
from dckd.training.checkpoint import safe_load
from dckd.training.loop import latest_checkpoint, train_local
cfg = load_config(data=json.loads(sys.argv[1]), overrides=["method.toy.weight=2"])
assert cfg.method.enabled_terms == ["rec", "toy"] and cfg.method.toy.weight == 2.0
summary = train_local(cfg, progress=False, stop_at=2)
summary = train_local(cfg, progress=False)  # resumes: the toy's own state comes back
state = safe_load(latest_checkpoint(cfg.run_dir))
print(json.dumps({"iteration": summary["iteration"], "toy": state["terms"]["toy"]}))
'''


def test_a_toy_term_in_one_file_plus_one_registry_line_trains(tmp_path: Path, hr_folder: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "toy_term.py").write_text(TOY_TERM)
    dist = plugin / "toy_term-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-term\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dckd.terms]\ntoy = toy_term:Toy\n")  # the registry line

    cfg = tiny_config_dict(hr_folder, tmp_path / "run", method="scratch", iterations=4, ckpt_every=2, log_every=1)
    cfg["method"]["toy"] = {"enabled": True}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"iteration": 4, "toy": {"steps": 4}}
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["iter"] for r in train] == [1, 2, 3, 4]
    assert all(r["toy"] > 0 and abs(r["total"] - r["rec"] - r["toy"]) < 1e-5 for r in train)

    # Without the plugin the key is refused like any unknown key.
    bad = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(cfg)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert bad.returncode != 0 and "method.toy: unknown key" in bad.stderr
