"""Configuration: every bad input is refused before work starts, naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dckd.config import MethodConfig, load_config
from dckd.errors import ConfigError
from tests.conftest import tiny_config_dict


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def good(tmp_path: Path, hr_folder: Path) -> dict:
    return tiny_config_dict(hr_folder, tmp_path / "run")


def refused(tmp_path: Path, data: dict, *fragments: str, overrides: list[str] | None = None) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    msg = str(err.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_good_config_and_released_defaults(tmp_path: Path, good: dict) -> None:
    cfg = load_config(write(tmp_path, good))
    assert cfg.method.enabled_terms == ["rec", "kd", "dcr", "dmm"]
    del good["method"]
    cfg = load_config(write(tmp_path, good))
    d = cfg.method
    assert (d.rec.weight, d.kd.weight, d.dcr.weight, d.dmm.weight) == (1.0, 1.0, 0.1, 0.001)
    assert d.dcr.num_negatives == 5 and d.dcr.level_weights == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    assert d.dcr.history.alpha == 0.1 and d.dcr.history.update_every == 1000
    deg = d.dcr.degradation
    assert (deg.blur_prob, deg.resize_prob, deg.noise_prob, deg.gray_noise_prob) == (0, 0, 1, 0.5)
    assert not d.dmm.released_double_softmax and d.lcr.weight == 1.0 and d.lcr.prob == 0.5
    assert cfg.optim.betas == (0.9, 0.99) and cfg.train.ema_decay == 0.999


def test_presets_switch_terms_and_each_term_is_switchable(tmp_path: Path, good: dict) -> None:
    path = write(tmp_path, good)
    assert load_config(path, ["method.preset=dckd_star"]).method.enabled_terms == [
        "rec", "kd", "dcr", "dmm", "lcr", "dukd"]
    assert load_config(path, ["method.preset=logits"]).method.enabled_terms == ["rec", "kd"]
    table5 = load_config(path, ["method.dmm.enabled=false"]).method
    assert table5.enabled_terms == ["rec", "kd", "dcr"]
    blur = load_config(path, ["method.dcr.degradation.type=blur"]).method.dcr.degradation
    assert (blur.blur_prob, blur.resize_prob, blur.noise_prob) == (1.0, 0.0, 0.0)


RELEASE_SWITCHES = ("dmm.released_double_softmax", "dcr.degradation.released_shared_gray_noise",
                    "dcr.degradation.released_unclamped_resize")


def test_dckd_release_turns_on_lcr_and_every_release_switch(tmp_path: Path, good: dict) -> None:
    path = write(tmp_path, good)
    release = load_config(path, ["method.preset=dckd_release"]).method
    assert release.enabled_terms == ["rec", "kd", "dcr", "dmm", "lcr"]
    assert (release.lcr.weight, release.lcr.prob) == (1.0, 0.5)  # release: lcr_opt 1.0, noisy.prob 0.5
    assert release.release_switches == dict.fromkeys(RELEASE_SWITCHES, True)
    paper = load_config(path, ["method.preset=dckd"]).method
    assert paper.release_switches == dict.fromkeys(RELEASE_SWITCHES, False)
    assert load_config(path, ["method.preset=dckd_star"]).method.release_switches == paper.release_switches


def test_a_release_switch_the_config_sets_wins_over_the_preset(tmp_path: Path, good: dict) -> None:
    path = write(tmp_path, good)
    m = load_config(path, ["method.preset=dckd_release", "method.dmm.released_double_softmax=false",
                           "method.dcr.degradation.type=resize"]).method
    assert m.release_switches == {RELEASE_SWITCHES[0]: False, RELEASE_SWITCHES[1]: True, RELEASE_SWITCHES[2]: True}
    assert m.dcr.degradation.resize_prob == 1.0 and m.dcr.num_negatives == good["method"]["dcr"]["num_negatives"]
    on = load_config(path, ["method.preset=dckd", "method.dcr.degradation.released_unclamped_resize=true"]).method
    assert on.release_switches[RELEASE_SWITCHES[2]] and not on.release_switches[RELEASE_SWITCHES[1]]
    # a section passed as a model keeps what it set and still gets the preset's switch
    from dckd.config import DMMConfig

    as_model = MethodConfig(preset="dckd_release", dmm=DMMConfig(weight=0.01))
    assert as_model.dmm.weight == 0.01 and as_model.dmm.released_double_softmax
    # the caller's data is not changed by the preset's defaults
    data = {"preset": "dckd_release", "dmm": {"weight": 0.01}}
    assert MethodConfig.model_validate(data).dmm.released_double_softmax and data == {
        "preset": "dckd_release", "dmm": {"weight": 0.01}}


def test_unknown_key(tmp_path: Path, good: dict) -> None:
    good["method"]["dcr"]["negatives"] = 3
    refused(tmp_path, good, "method.dcr.negatives", "unknown key")


def test_wrong_type(tmp_path: Path, good: dict) -> None:
    good["train"]["batch_size"] = "sixteen"
    refused(tmp_path, good, "train.batch_size", "sixteen")


def test_scale_five(tmp_path: Path, good: dict) -> None:
    good["scale"] = 5
    refused(tmp_path, good, "scale must be 2, 3 or 4")


def test_zero_negatives(tmp_path: Path, good: dict) -> None:
    good["method"]["dcr"]["num_negatives"] = 0
    refused(tmp_path, good, "method.dcr.num_negatives", "greater than or equal to 1")


def test_negative_weight(tmp_path: Path, good: dict) -> None:
    good["method"]["dmm"] = {"weight": -0.1}
    refused(tmp_path, good, "method.dmm.weight", "greater than or equal to 0")


def test_missing_file(tmp_path: Path, good: dict) -> None:
    good["teacher"]["checkpoint"] = str(tmp_path / "nope.pth")
    refused(tmp_path, good, "teacher.checkpoint", "nope.pth", "does not exist")
    good["teacher"].pop("checkpoint")
    good["data"]["val"][0]["hr_dir"] = str(tmp_path / "no_such_dir")
    refused(tmp_path, good, "data.val.0.hr_dir", "no_such_dir")


def test_preset_scale_mismatch_and_unknown_preset(tmp_path: Path, good: dict) -> None:
    good["scale"] = 4
    refused(tmp_path, good, "rcan_tiny_x2_teacher", "x2", "scale is 4")
    good["scale"] = 2
    good["student"]["preset"] = "resnet50"
    refused(tmp_path, good, "student", "unknown preset 'resnet50'")


def test_distillation_without_teacher(tmp_path: Path, good: dict) -> None:
    del good["teacher"]
    refused(tmp_path, good, "need a teacher")


def test_set_overrides(tmp_path: Path, good: dict) -> None:
    path = write(tmp_path, good)
    cfg = load_config(path, ["train.iterations=7", "method.dcr.level_weights=[1, 1, 1, 1, 0]",
                             "data.val.0.name=bench"])
    assert cfg.train.iterations == 7 and cfg.method.dcr.level_weights == [1, 1, 1, 1, 0]
    assert cfg.data.val[0].name == "bench"
    refused(tmp_path, good, "train.iterationz", "unknown key", overrides=["train.iterationz=5"])
    refused(tmp_path, good, "method.dcr.num_negatives", overrides=["method.dcr.num_negatives=0"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(path, ["train.iterations"])


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("override", ["method.dcr.weight=.inf", "method.rec.weight=.nan", "optim.lr=.inf",
                                      "method.dcr.level_weights=[1, 1, 1, 1, .inf]"])
def test_non_finite_weights_are_refused(tmp_path: Path, override: str) -> None:
    """An inf weight passed validation and trained 44 of 48 student tensors to NaN; now it fails at load."""
    data = tiny_config_dict(tmp_path, tmp_path / "run")
    field = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{field}(\.4)?: Input should be a finite number"):
        load_config(data=data, overrides=[override])
