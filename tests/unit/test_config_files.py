"""Config files: ``extends`` chains and the ``${data}`` / ``${weights}`` roots."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dckd.config import load_config
from dckd.errors import ConfigError
from tests.conftest import tiny_config_dict


def test_extends_merges_mappings_and_the_child_wins(tmp_path: Path, hr_folder: Path) -> None:
    base = tiny_config_dict(hr_folder, tmp_path / "run")
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "base.yaml").write_text(yaml.safe_dump(base))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": "common/base.yaml", "name": "child",
                                     "optim": {"lr": 5e-4}, "method": {"dcr": {"num_negatives": 2}}}))
    cfg = load_config(child)
    assert cfg.name == "child" and cfg.optim.lr == 5e-4
    assert cfg.method.dcr.num_negatives == 2
    assert cfg.method.dcr.history.update_every == 4  # kept from the base mapping
    assert cfg.optim.betas == (0.9, 0.99)


def test_extends_errors_name_the_file(tmp_path: Path) -> None:
    loop_a, loop_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    loop_a.write_text("extends: b.yaml\nname: a\n")
    loop_b.write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(loop_a)
    missing = tmp_path / "m.yaml"
    missing.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        load_config(missing)


def test_data_and_weights_roots(tmp_path: Path, hr_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = hr_folder.parent
    d = tiny_config_dict(Path("${data}") / hr_folder.name, tmp_path / "run")
    d["teacher"]["checkpoint"] = "${weights}/teacher.pth"
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(d))
    monkeypatch.setenv("DCKD_DATA_ROOT", str(data_root))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "teacher.pth").write_bytes(b"")
    monkeypatch.setenv("DCKD_WEIGHTS_ROOT", f"{tmp_path / 'w'}/")
    cfg = load_config(path)
    assert Path(cfg.data.train.hr_dir) == hr_folder
    assert Path(cfg.teacher.checkpoint) == tmp_path / "w" / "teacher.pth"
    monkeypatch.setenv("DCKD_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="elsewhere"):  # the resolved folder is named
        load_config(path)
