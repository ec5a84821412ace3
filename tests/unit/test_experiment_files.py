"""Every YAML under experiments/ loads, and what it names can be built.

Experiment configs (experiments/*.yaml, experiments/paper/*.yaml), the paper's table files
(experiments/tables/*.yaml, one resolved config per cell) and sweep files (experiments/sweeps/*.yaml)
are all resolved against a tiny dataset in the layout the paper configs expect (DCKD_DATA_ROOT),
built from crops of scikit-image photographs. For each resolved config the networks are built
with their real architectures (no weights: teacher.checkpoint and vqgan.checkpoint are set to
null), the distillation method is built with the networks of its own (FAKD taps, MiPKD mixer,
VGG16, VQGAN), and every data section is paired and loaded. Building the full-size networks is the
slow part, so each distinct network is built once per session.

The paper configs are also resolved against the layout `dckd data prepare photos` writes, and the
published numbers of the table files are spot-checked against the paper's tables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dckd.config import ExperimentConfig, load_config, read_config_tree
from dckd.data.matlab_resize import bicubic_lr, modcrop
from dckd.data.pairs import load_pair
from dckd.data.specs import benchmark_sets, train_pairs
from dckd.errors import ConfigError
from dckd.imageio import write_image
from dckd.losses.fakd import fakd_layers
from dckd.losses.mipkd import build_mixer
from dckd.losses.perceptual import VGGFeatures
from dckd.models import count_params
from dckd.models.vqgan import VQGANFeatures
from dckd.reporting.tables import LoadedTable, find_tables, read_table
from dckd.terms.registry import TERMS
from dckd.training.engine import build_network
from tests.conftest import PAPER_PARAMS_M, photo_crops
from trainers.tune import load_sweep

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
PAPER = EXPERIMENTS / "paper"
TABLES = EXPERIMENTS / "tables"
SWEEPS = EXPERIMENTS / "sweeps"

# Builds use no pretrained weights (none can be downloaded here): every checkpoint a config names
# is set to null. The teacher's is set only where a teacher section exists.
NO_WEIGHTS = ["teacher.checkpoint=null", "vqgan.checkpoint=null", "method.mclir.vgg_checkpoint=null"]


# --------------------------------------------------------------------------- which file is what
def _load(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path}: the top level must be a mapping"
    return raw


ALL_YAML = sorted(EXPERIMENTS.rglob("*.yaml"))
# What a file is follows from its content: a table has `table:`, a sweep has `search:`, a config
# fragment is named by some other file's `extends:`, anything else is a runnable experiment.
TABLE_FILES = [p for p in ALL_YAML if "table" in _load(p)]
SWEEP_FILES = [p for p in ALL_YAML if "search" in _load(p)]


def _extends_targets() -> set[Path]:
    targets: set[Path] = set()
    for path in ALL_YAML:
        parents = _load(path).get("extends")
        for parent in [parents] if isinstance(parents, str) else list(parents or []):
            targets.add((path.parent / parent).resolve())
    return targets


FRAGMENTS = sorted(_extends_targets())
EXPERIMENT_FILES = [p for p in ALL_YAML
                    if p not in TABLE_FILES and p not in SWEEP_FILES and p.resolve() not in set(FRAGMENTS)]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(EXPERIMENTS)) for p in paths]


def test_every_yaml_under_experiments_is_covered() -> None:
    assert not list(EXPERIMENTS.rglob("*.yml")), "use the .yaml extension"
    assert set(TABLE_FILES).isdisjoint(SWEEP_FILES)
    # Folders hold one kind each (the demo's own table sits beside demo.yaml).
    assert all(p.parent == TABLES for p in TABLE_FILES if p.parent != EXPERIMENTS)
    assert all(p.parent == SWEEPS for p in SWEEP_FILES)
    assert all(p.parent in (EXPERIMENTS, PAPER) for p in EXPERIMENT_FILES)
    assert {p.resolve() for p in TABLES.glob("*.yaml")} <= {p.resolve() for p in TABLE_FILES}
    # The files the paper reproduction needs exist.
    for stem in ("swinir_x2", "swinir_x3", "swinir_x4", "rcan_x2", "rcan_x3", "rcan_x4", "swinir_light_x4",
                 "nafnet_gopro", "restormer_gopro", "restormer_derain"):
        assert (PAPER / f"{stem}.yaml") in EXPERIMENT_FILES, stem
    for stem in ("table2_swinir_x2", "table2_swinir_x3", "table2_swinir_x4", "table2_rcan_x2", "table2_rcan_x3",
                 "table2_rcan_x4", "table3_nafnet", "table3_restormer", "table4", "table5", "table6", "table7",
                 "fig8", "table8"):
        assert (TABLES / f"{stem}.yaml") in TABLE_FILES, stem
    assert {EXPERIMENTS / "demo.yaml", EXPERIMENTS / "smoke.yaml"} <= set(EXPERIMENT_FILES)
    assert SWEEP_FILES


@pytest.mark.parametrize("path", FRAGMENTS, ids=_ids(FRAGMENTS))
def test_fragments_are_partial_configs(path: Path) -> None:
    """A fragment lives beside the configs, merges cleanly and is not a run of its own (no name)."""
    assert path.is_file() and path.parent == PAPER, path
    tree = read_config_tree(path)
    assert "name" not in tree and "extends" not in tree, path


# --------------------------------------------------------------------------- the tiny dataset
SR_BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
DERAIN_SETS = ("Test100", "Rain100H", "Rain100L", "Test2800", "Test1200")


def _blurred(img: np.ndarray) -> np.ndarray:
    """A horizontal 5-tap box blur: a cheap stand-in for GoPro's motion blur."""
    pad = np.pad(img.astype(np.float32), ((0, 0), (2, 2), (0, 0)), mode="edge")
    out = sum(pad[:, i:i + img.shape[1]] for i in range(5)) / 5
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _rainy(img: np.ndarray) -> np.ndarray:
    """Bright diagonal streaks on the clean image: a stand-in for synthetic rain."""
    out = img.astype(np.int16)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out[(xx + 2 * yy) % 11 == 0] += 60
    return np.clip(out, 0, 255).astype(np.uint8)


def make_paper_data(root: Path) -> Path:
    """The folders the paper configs read under ${data}, with a few tiny photo crops each.

    SR: DIV2K sub-images (HR 48 px, divisible by 2, 3, 4) with LR files of the same names, and
    benchmarks in the EDSR layout (HR/ not mod-cropped: 50 px; LR_bicubic/X{s}/<name>x{s}.png).
    Deblurring and deraining: input/target folders with identical file names.
    """
    crops = photo_crops(size=50, count=3)
    for i, crop in enumerate(crops[:2]):
        hr = crop[:48, :48]
        write_image(root / "DIV2K" / "train_HR_sub" / f"000{i + 1}_s001.png", hr)
        for s in (2, 3, 4):
            write_image(root / "DIV2K" / "train_LR_bicubic" / f"X{s}_sub" / f"000{i + 1}_s001.png", bicubic_lr(hr, s))
    for name in SR_BENCHMARKS:
        for i, hr in enumerate(crops[1:]):
            stem = f"{name.lower()}_{i}"
            write_image(root / "benchmarks" / name / "HR" / f"{stem}.png", hr)
            for s in (2, 3, 4):
                lr = bicubic_lr(modcrop(hr, s), s)
                write_image(root / "benchmarks" / name / "LR_bicubic" / f"X{s}" / f"{stem}x{s}.png", lr)
    small = [c[:32, :32] for c in crops]
    for split in ("train", "test"):
        for i, img in enumerate(small):
            write_image(root / "GoPro" / split / "target" / f"GOPR{i:04d}_000001.png", img)
            write_image(root / "GoPro" / split / "input" / f"GOPR{i:04d}_000001.png", _blurred(img))
    for folder in [root / "Rain13K" / "train", *(root / "derain_test" / n for n in DERAIN_SETS)]:
        for i, img in enumerate(small):
            write_image(folder / "target" / f"{i + 1}.png", img)
            write_image(folder / "input" / f"{i + 1}.png", _rainy(img))
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with the paper data root and the demo's runs/demo/data folders."""
    work = tmp_path_factory.mktemp("experiments")
    make_paper_data(work / "data")
    for sub, crops in (("train_hr", photo_crops(40, 3)), ("test_hr", photo_crops(40, 2))):
        for i, img in enumerate(crops):
            write_image(work / "runs" / "demo" / "data" / sub / f"photo{i}.png", img)
    return work


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("DCKD_DATA_ROOT", str(workdir / "data"))
    monkeypatch.setenv("DCKD_WEIGHTS_ROOT", str(workdir / "no-weights-here"))
    yield workdir


# --------------------------------------------------------------------------- building, once per spec
_NETWORKS: dict[str, Any] = {}
_OWN: dict[str, Any] = {}  # VQGAN encoders, MiPKD mixers, VGG16 features
_DATA: set[str] = set()


def _network(spec: Any, scale: int) -> Any:
    key = json.dumps([spec.model_dump(mode="json"), scale], sort_keys=True)
    if key not in _NETWORKS:
        _NETWORKS[key] = build_network(spec, scale)
    return _NETWORKS[key]


def check_method(cfg: ExperimentConfig, student: Any, teacher: Any) -> None:
    """The method and the networks of its own, built as the engine builds them (dckd.training.engine.Engine)."""
    m = cfg.method
    assert m.enabled_terms and all(TERMS[name].name == name for name in m.enabled_terms)
    if m.needs_teacher:
        assert teacher is not None, f"terms {m.enabled_terms} need a teacher"
    if m.needs_vqgan:
        key = cfg.vqgan.model_dump_json()
        if key not in _OWN:
            _OWN[key] = VQGANFeatures.from_spec(cfg.vqgan, log=lambda msg: None)
        assert len(m.dcr.level_weights) == len(cfg.vqgan.ch_mult)
    if m.fakd.enabled:  # the feature taps exist in both architectures
        s_layers, t_layers = fakd_layers(m.fakd.student_layers, m.fakd.teacher_layers, student, teacher)
        assert s_layers and len(s_layers) == len(t_layers)
    if m.mipkd.enabled:
        key = json.dumps(["mipkd", id(student), id(teacher), m.mipkd.model_dump(mode="json")])
        if key not in _OWN:
            _OWN[key] = build_mixer(student, teacher, m.mipkd.stages, m.mipkd.latent_channels, m.mipkd.mask_prob,
                                    m.mipkd.switch_prob, m.mipkd.ae_weight, block=m.mipkd.block_weight > 0)
    if m.dukd.enabled:
        assert cfg.task == "sr" and m.dukd.zoom_in_tiles <= cfg.scale**2
        assert not m.dukd.zoom_out or cfg.data.train.lq_patch % cfg.scale == 0
    if m.mclir.enabled:
        key = json.dumps(["vgg", m.mclir.vgg_layers])
        if key not in _OWN:
            _OWN[key] = VGGFeatures(m.mclir.vgg_layers, None, log=lambda msg: None)


def check_buildable(cfg: ExperimentConfig) -> None:
    """Networks (real architectures), the method, and every data section of one resolved config."""
    assert cfg.teacher is None or cfg.teacher.checkpoint is None, "tests build without weights"
    student = _network(cfg.student, cfg.scale)
    assert student.scale == cfg.scale
    if cfg.student.preset in PAPER_PARAMS_M:  # paper Table 1, one decimal as printed
        assert round(count_params(student) / 1e6, 1) == PAPER_PARAMS_M[cfg.student.preset]
    teacher = None
    if cfg.teacher is not None:
        teacher = _network(cfg.teacher, cfg.scale)
        assert teacher.scale == cfg.scale and teacher.backbone == student.backbone
        if cfg.teacher.preset in PAPER_PARAMS_M:
            assert round(count_params(teacher) / 1e6, 1) == PAPER_PARAMS_M[cfg.teacher.preset]
        assert count_params(teacher) > count_params(student)
    check_method(cfg, student, teacher)
    data_key = json.dumps([cfg.task, cfg.scale, cfg.data.model_dump(mode="json")], sort_keys=True)
    if data_key in _DATA:
        return
    pairs = train_pairs(cfg)
    assert pairs, "no training pairs"
    lq, gt = load_pair(pairs[0], cfg.scale)
    assert gt.shape[:2] == (lq.shape[0] * cfg.scale, lq.shape[1] * cfg.scale)
    for split in ("val", "test"):
        sets = benchmark_sets(cfg, split)
        assert [name for name, _ in sets] == [b.name for b in getattr(cfg.data, split)]
        assert all(len(s) > 0 for _, s in sets)
    _DATA.add(data_key)


def _no_weights(tree: dict[str, Any]) -> list[str]:
    return NO_WEIGHTS if tree.get("teacher") is not None else NO_WEIGHTS[1:]


# --------------------------------------------------------------------------- experiment configs
@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=_ids(EXPERIMENT_FILES))
def test_experiment_config_builds(path: Path, in_workdir: Path) -> None:
    tree = read_config_tree(path)
    cfg = load_config(path, _no_weights(tree))
    assert cfg.name == path.stem, "an experiment's name is its file name (run names stay unique)"
    check_buildable(cfg)


# The official checkpoints the paper configs name (reference-implementation.md, baselines.md):
# (file under ${weights}, state-dict key).
OFFICIAL_TEACHERS = {
    **{f"swinir_x{s}": (f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth", "params") for s in (2, 3, 4)},
    "swinir_light_x4": ("001_classicalSR_DIV2K_s48w8_SwinIR-M_x4.pth", "params"),
    **{f"rcan_x{s}": (f"RCAN_BIX{s}.pt", None) for s in (2, 3, 4)},
    "nafnet_gopro": ("NAFNet-GoPro-width32.pth", "params"),
    "restormer_gopro": ("motion_deblurring.pth", "params"),
    "restormer_derain": ("deraining.pth", "params"),
}
PAPER_CONFIGS = sorted(p for p in EXPERIMENT_FILES if p.parent == PAPER)


def test_paper_configs_name_the_official_weights(tmp_path: Path, in_workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With the official files under $DCKD_WEIGHTS_ROOT, every paper config loads as it is."""
    assert {p.stem for p in PAPER_CONFIGS} == set(OFFICIAL_TEACHERS)
    weights = tmp_path / "weights"
    weights.mkdir()
    extra = {"vqgan_imagenet_f16_1024.ckpt", "vgg16-397923af.pth"}  # taming VQGAN f16/1024; torchvision VGG16
    for name in {f for f, _ in OFFICIAL_TEACHERS.values()} | extra:
        (weights / name).write_bytes(b"")
    monkeypatch.setenv("DCKD_WEIGHTS_ROOT", str(weights))
    for path in PAPER_CONFIGS:
        cfg = load_config(path)
        file, key = OFFICIAL_TEACHERS[path.stem]
        assert cfg.teacher is not None and cfg.teacher.checkpoint == str(weights / file), path
        assert cfg.teacher.checkpoint_key == key, path
        assert cfg.vqgan.checkpoint == weights / "vqgan_imagenet_f16_1024.ckpt", path
    # Every table cell resolves with the real files in place (no override of any checkpoint).
    for path in TABLE_FILES:
        if path.parent != TABLES:
            continue
        table = read_table(path)
        for cell in table.spec.cells:
            cfg = table.cell_config(cell)
            if cfg.method.mclir.enabled:
                assert cfg.method.mclir.vgg_checkpoint == str(weights / "vgg16-397923af.pth")


def test_paper_settings(in_workdir: Path) -> None:
    """The numbers of the paper's Implementation Details and Appendix, as resolved configs."""
    cfgs = {p.stem: load_config(p, NO_WEIGHTS) for p in PAPER_CONFIGS}
    for name, cfg in cfgs.items():
        m = cfg.method
        assert m.preset == "dckd" and m.dcr.weight == 0.1 and m.dmm.weight == 0.001, name  # Table 7
        assert m.dcr.num_negatives == 5 and m.dcr.history.update_every == 1000, name  # Fig. 8
        assert m.dcr.history.alpha == 0.1 and m.dcr.degradation.type == "noise", name  # Appendix, Table 6
        assert cfg.train.ema_decay == 0.999, name
        if cfg.task == "sr":
            assert cfg.teacher and cfg.teacher.preset == f"{name.split('_x')[0].replace('_light', '')}_x{cfg.scale}_teacher"
            assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas, cfg.optim.eps) == ("adam", 1e-4, (0.9, 0.99), 1e-8)
            assert (cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.gamma) == ("multistep", [100_000, 200_000], 0.1)
            assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.val_every) == (250_000, 16, 5000)
            # release: batch_size_per_gpu 16 on num_gpu 4
            assert cfg.train.total_batch == cfg.train.batch_size * cfg.ray.num_workers == 64
            assert (cfg.data.train.lq_patch, cfg.data.train.hflip, cfg.data.train.rot) == (48, True, True)
            assert cfg.data.train.lr_dir is not None and cfg.data.train.lr_dir.endswith(f"X{cfg.scale}_sub")
            assert [b.name for b in cfg.data.val] == ["Set5", "Set14", "Urban100"]
            tests = ["Set5", "Set14", "B100", "Urban100"] + (["Manga109"] if name == "swinir_light_x4" else [])
            assert [b.name for b in cfg.data.test] == tests
            assert all(b.lr_dir and b.lr_dir.endswith(f"LR_bicubic/X{cfg.scale}") for b in cfg.data.test)
            assert cfg.eval.y_channel is True and cfg.eval.crop_border is None  # Y, crop = scale
        else:
            assert cfg.scale == 1 and cfg.eval.crop_border == 0
    assert {n: c.scale for n, c in cfgs.items() if c.task == "sr"} == {
        "swinir_x2": 2, "swinir_x3": 3, "swinir_x4": 4, "rcan_x2": 2, "rcan_x3": 3, "rcan_x4": 4, "swinir_light_x4": 4}
    assert cfgs["swinir_light_x4"].student.preset == "swinir_light_x4_student"

    naf = cfgs["nafnet_gopro"]  # paper Appendix
    assert naf.task == "deblur" and naf.eval.y_channel is False
    assert (naf.optim.name, naf.optim.lr, naf.optim.betas, naf.optim.weight_decay) == ("adamw", 1e-3, (0.9, 0.9), 1e-3)
    assert (naf.schedule.name, naf.schedule.eta_min, naf.train.iterations) == ("cosine", 1e-7, 200_000)
    assert naf.data.train.lq_patch == 256 and naf.train.batch_size * naf.ray.num_workers == naf.train.total_batch == 32

    for name in ("restormer_gopro", "restormer_derain"):  # paper Appendix
        r = cfgs[name]
        assert (r.optim.name, r.optim.lr, r.optim.betas, r.optim.weight_decay) == ("adamw", 3e-4, (0.9, 0.999), 1e-4)
        assert r.schedule.name == "cosine_restart" and r.schedule.eta_mins[-1] == 1e-6
        assert sum(r.schedule.periods) == r.train.iterations == 300_000
        prog = r.data.train.progressive
        assert prog is not None
        assert prog.milestones == [92_000, 156_000, 204_000, 240_000, 276_000, 300_000]
        assert prog.lq_patches == [128, 160, 192, 256, 320, 384]
        assert [b * r.ray.num_workers for b in prog.batch_sizes] == [64, 40, 32, 16, 8, 8]
        assert r.train.total_batch == 64  # the first stage's
    assert cfgs["restormer_gopro"].task == "deblur" and cfgs["restormer_gopro"].eval.y_channel is False
    derain = cfgs["restormer_derain"]
    assert derain.task == "derain" and derain.eval.y_channel is True
    assert [b.name for b in derain.data.test] == list(DERAIN_SETS)


# --------------------------------------------------------------------------- tables
@pytest.mark.parametrize("path", TABLE_FILES, ids=_ids(TABLE_FILES))
def test_table_cells_build(path: Path, in_workdir: Path) -> None:
    table = read_table(path)
    if path.parent == TABLES:  # the paper's tables: addressed by file name, built on the paper configs
        assert table.spec.table == path.stem
        assert table.base_path.resolve() in {p.resolve() for p in PAPER_CONFIGS}
    base_tree = read_config_tree(table.base_path)
    for cell in table.spec.cells:
        # cell_config also checks that the table's benchmarks are test sets of the cell's config.
        cfg = table.cell_config(cell, _no_weights(base_tree))
        assert cfg.name == f"{table.spec.table}-{cell.id}"
        if cell.kind == "teacher":
            assert str(base_tree["teacher"].get("checkpoint")).startswith("${weights}/"), "a teacher cell needs weights"
        else:
            assert any(s.startswith("method.") for s in [*table.spec.set, *cell.set]), cell.id
        check_buildable(cfg)


def test_table_groups_and_published_json() -> None:
    group = find_tables("table2", TABLES)
    assert [t.spec.table for t in group] == sorted(
        f"table2_{m}_x{s}" for m in ("rcan", "swinir") for s in (2, 3, 4))
    for t in group:
        ids = [c.id for c in t.spec.cells]
        assert ids == ["teacher", "scratch", "logits", "fakd", "mipkd", "dckd"] + (
            ["dckd_star"] if t.spec.table.endswith("x4") else []) + ["dckd_paper"]
        assert t.spec.cells[0].kind == "teacher"
        assert all(len(c.published) == 4 for c in t.spec.cells)
    assert [t.spec.table for t in find_tables("table3", TABLES)] == ["table3_nafnet", "table3_restormer"]
    fig8 = find_tables("fig8", TABLES)[0].spec
    assert all(c.published == {} for c in fig8.cells), "Fig. 8 is a plot: no published numbers"
    assert sorted(c.id for c in fig8.cells if "negatives" in c.id) == sorted(f"negatives-{n}" for n in range(1, 9))


def _published(table: str, cell: str) -> dict[str, tuple[float, float]]:
    loaded: LoadedTable = find_tables(table, TABLES)[0]
    return loaded.spec.cell(cell).published


# Spot checks against the paper's tables (copied by hand from the paper, independently of the files).
PAPER_NUMBERS = [
    ("table2_rcan_x4", "dckd", "Urban100", (26.69, 0.8041)),
    ("table2_rcan_x4", "dckd_star", "Set5", (32.58, 0.8996)),
    ("table2_rcan_x4", "teacher", "B100", (27.77, 0.7436)),
    ("table2_rcan_x2", "mipkd", "Set14", (33.92, 0.9203)),
    ("table2_rcan_x3", "fakd", "Set14", (30.51, 0.8453)),
    ("table2_swinir_x2", "teacher", "Urban100", (33.40, 0.9394)),
    ("table2_swinir_x3", "dckd", "B100", (29.22, 0.8093)),
    ("table2_swinir_x4", "scratch", "Set5", (32.31, 0.8955)),
    ("table2_swinir_x4", "dckd_star", "Urban100", (26.62, 0.8032)),
    ("table2_swinir_x4", "logits", "Set5", (32.27, 0.8954)),
    ("table3_nafnet", "dckd", "GoPro", (31.43, 0.9487)),
    ("table3_restormer", "teacher", "GoPro", (32.92, 0.9610)),
    ("table4", "dckd", "Rain100L", (38.02, 0.9762)),
    ("table4", "scratch", "Test1200", (33.67, 0.9295)),
    ("table5", "baseline", "Urban100", (32.67, 0.9329)),
    ("table5", "dcr", "Set14", (33.98, 0.9208)),
    ("table5", "dmm", "Urban100", (32.81, 0.9343)),
    ("table5", "dcr_dmm", "Set14", (34.01, 0.9213)),
    ("table6", "blur", "Urban100", (32.89, 0.9352)),
    ("table6", "resize", "Set14", (33.99, 0.9212)),
    ("table6", "mix", "Urban100", (32.87, 0.9353)),
    ("table7", "dcl-0.01", "Urban100", (32.87, 0.9346)),
    ("table7", "dcl-1.0", "Urban100", (32.81, 0.9350)),
    ("table7", "ce-0.0001", "Urban100", (32.84, 0.9345)),
    ("table7", "ce-0.01", "Urban100", (32.82, 0.9341)),
    ("table8", "scratch", "Manga109", (30.92, 0.9151)),
    ("table8", "mclir", "Urban100", (26.57, 0.8010)),
    ("table8", "dckd", "B100", (27.75, 0.7432)),
]


@pytest.mark.parametrize(("table", "cell", "bench", "expected"), PAPER_NUMBERS,
                         ids=[f"{t}-{c}-{b}" for t, c, b, _ in PAPER_NUMBERS])
def test_published_numbers_are_the_papers(table: str, cell: str, bench: str, expected: tuple) -> None:
    assert _published(table, cell)[bench] == expected


def test_ablation_tables_share_their_default_cell() -> None:
    """Tables 5-7 report the same default DCKD run (RCAN x2), which is Table 2's DCKD cell."""
    dckd = _published("table2_rcan_x2", "dckd")
    default = {"Set14": dckd["Set14"], "Urban100": dckd["Urban100"]}
    assert _published("table5", "dcr_dmm") == default
    assert _published("table6", "noise") == default
    assert _published("table7", "dcl-0.1") == _published("table7", "ce-0.001") == {"Urban100": dckd["Urban100"]}
    logits = _published("table2_rcan_x2", "logits")
    assert _published("table5", "baseline") == {"Set14": logits["Set14"], "Urban100": logits["Urban100"]}


# Which cell of each paper table is its DCKD (the default point of an ablation).
DCKD_CELLS = {**{f"table2_{m}_x{s}": "dckd" for m in ("rcan", "swinir") for s in (2, 3, 4)},
              "table3_nafnet": "dckd", "table3_restormer": "dckd", "table4": "dckd", "table8": "dckd",
              "table5": "dcr_dmm", "table6": "noise", "table7": "dcl-0.1", "fig8": "negatives-5"}
RELEASED_SWITCHES = {"dmm.released_double_softmax": True, "dcr.degradation.released_shared_gray_noise": True,
                     "dcr.degradation.released_unclamped_resize": True}


@pytest.mark.parametrize("table_id", sorted(DCKD_CELLS))
def test_dckd_cells_train_the_release_and_dckd_paper_the_paper(table_id: str, in_workdir: Path) -> None:
    """The DCKD cells train dckd_release (on the release's milestones for SR, which has released
    configs); the optional dckd_paper cell trains the paper's dckd against the same published row."""
    (table,) = find_tables(table_id, TABLES)
    overrides = _no_weights(read_config_tree(table.base_path))
    dckd = table.cell_config(table.spec.cell(DCKD_CELLS[table_id]), overrides)
    paper_cell = table.spec.cell("dckd_paper")
    paper = table.cell_config(paper_cell, overrides)
    assert dckd.method.preset == "dckd_release" and dckd.method.release_switches == RELEASED_SWITCHES
    assert dckd.method.enabled_terms == ["rec", "kd", "dcr", "dmm", "lcr"]
    assert paper.method.preset == "dckd" and not any(paper.method.release_switches.values())
    assert paper.method.enabled_terms == ["rec", "kd", "dcr", "dmm"]
    assert paper_cell.optional and not table.spec.cell(DCKD_CELLS[table_id]).optional
    assert paper_cell.published == table.spec.cell(DCKD_CELLS[table_id]).published
    if dckd.task == "sr":
        assert dckd.schedule.milestones == [250_000]  # released yml: MultiStepLR milestones [250000]
        assert paper.schedule.milestones == [100_000, 200_000]  # paper: x0.1 every 1e5 updates
    else:  # no released config: the backbone's own schedule for both
        assert dckd.schedule == paper.schedule and dckd.schedule.name != "multistep"
    for cell in table.spec.cells:  # the other trained cells keep the paper's schedule
        if cell.kind == "train" and cell.id != "dckd_paper" and dckd.task == "sr":
            cfg = table.cell_config(cell, overrides)
            expected = [250_000] if cfg.method.preset == "dckd_release" else [100_000, 200_000]
            assert cfg.schedule.milestones == expected, cell.id
    assert "the released configs' label-consistency term" not in table.spec.notes


def test_dckd_star_cells_are_the_release_plus_dukd_upcycling(in_workdir: Path) -> None:
    for table_id in ("table2_rcan_x4", "table2_swinir_x4"):
        (table,) = find_tables(table_id, TABLES)
        cfg = table.cell_config(table.spec.cell("dckd_star"), _no_weights(read_config_tree(table.base_path)))
        assert cfg.method.enabled_terms == ["rec", "kd", "dcr", "dmm", "lcr", "dukd"]  # = preset dckd_star's
        assert cfg.method.release_switches == RELEASED_SWITCHES and cfg.schedule.milestones == [250_000]


def test_optional_cells_run_only_when_asked(photos_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reproduction = pytest.importorskip("dckd.reporting.reproduction")
    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))

    def cells(selection: list[str] | None) -> list[str]:
        return [p.cell.id for p in reproduction.plan("table5", selection, overrides=NO_WEIGHTS, tables_dir=TABLES)]

    assert cells(None) == ["baseline", "dcr", "dmm", "dcr_dmm"]
    assert cells(["+dckd_paper"]) == ["baseline", "dcr", "dmm", "dcr_dmm", "dckd_paper"]
    assert cells(["dckd_paper"]) == ["dckd_paper"]
    assert cells(["dcr_dmm", "+dckd_paper"]) == ["dcr_dmm", "dckd_paper"]
    with pytest.raises(ConfigError, match="not in the table"):
        cells(["+nope"])


def test_seeds_plan_one_run_per_seed_that_resumes_and_registers_apart(
        photos_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reproduction = pytest.importorskip("dckd.reporting.reproduction")
    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))
    planned = reproduction.plan("table5", ["baseline", "dcr"], overrides=NO_WEIGHTS, out=tmp_path, tables_dir=TABLES,
                                seeds=3)
    single = reproduction.plan("table5", ["baseline"], overrides=NO_WEIGHTS, tables_dir=TABLES)[0].cfg
    assert [p.key for p in planned] == [f"table5:{c}@s{s}" for c in ("baseline", "dcr") for s in (10, 11, 12)]
    for p in planned:
        assert p.cfg.seed == p.seed and p.cfg.name == f"table5-{p.cell.id}-s{p.seed}"
        assert p.cfg.output_dir == str(tmp_path / "runs" / "table5" / p.cell.id / f"seed{p.seed}")
        assert not p.cfg.tracking.register_student  # the cell's best seed is registered afterwards
        assert p.registered_name == f"table5-{p.cell.id}-student"
        # everything but the seed (and its name and folder) is the single run's config
        assert p.cfg.model_dump(exclude={"seed", "name", "output_dir", "tracking"}) == \
            planned[0].cfg.model_dump(exclude={"seed", "name", "output_dir", "tracking"}) or p.cell.id == "dcr"
    assert single.seed == 10 and single.name == "table5-baseline"
    text = reproduction.describe_plan("table5", ["baseline", "dcr"], None, NO_WEIGHTS, TABLES, seeds=3)
    assert text.startswith("2 cells, 6 runs (3 seeds per trained cell)") and "x seeds [10, 11, 12]" in text
    with pytest.raises(ConfigError, match="--seeds 0"):
        reproduction.plan("table5", overrides=NO_WEIGHTS, tables_dir=TABLES, seeds=0)


# --------------------------------------------------------------------------- sweeps
@pytest.mark.parametrize("path", SWEEP_FILES, ids=_ids(SWEEP_FILES))
def test_sweep_builds(path: Path, in_workdir: Path) -> None:
    sweep, base = load_sweep(path)  # checks every axis value against the base config
    assert Path(sweep.base).is_file()
    tree = read_config_tree(Path(sweep.base))
    cfg = load_config(sweep.base, [*sweep.set, *_no_weights(tree)])
    assert cfg.name == base.name
    check_buildable(cfg)


# --------------------------------------------------------------------------- the prepared layout
@pytest.fixture(scope="module")
def photos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dckd data prepare photos`: the stand-in for every dataset, in the layout it prepares."""
    prepare = pytest.importorskip("dckd.data.prepare")
    root = tmp_path_factory.mktemp("photos")
    results = prepare.prepare(["photos"], root, opts=prepare.Options(progress=False))
    assert all(r.ok for r in results), [r.line() for r in results]
    return root


def test_paper_configs_read_the_prepared_layout(photos_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folders `dckd data prepare` writes are the ones the paper configs name."""
    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))
    for path in PAPER_CONFIGS:
        cfg = load_config(path, NO_WEIGHTS)
        pairs = train_pairs(cfg)
        assert pairs and all(p.lq_path is not None for p in pairs)  # LR read from files, not generated
        load_pair(pairs[0], cfg.scale)
        for split in ("val", "test"):
            assert len(benchmark_sets(cfg, split)) == len(getattr(cfg.data, split))


def test_paper_tables_plan_scaled_down(photos_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dckd reproduce TABLE --scale-down` validates every cell of every paper table."""
    reproduction = pytest.importorskip("dckd.reporting.reproduction")
    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))
    groups = sorted({p.stem.split("_")[0] for p in TABLE_FILES if p.parent == TABLES})
    for group in groups:
        planned = reproduction.plan(group, scale_down=0.001, overrides=NO_WEIGHTS, tables_dir=TABLES)
        assert planned and all(c.cfg.train.iterations < 1000 for c in planned if c.cell.kind == "train")


def test_configs_tables_and_sweeps_validate_without_torch(tmp_path: Path, in_workdir: Path) -> None:
    """Loading every experiment, table (each cell resolved) and sweep file imports no torch, taming or ray."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in {f for f, _ in OFFICIAL_TEACHERS.values()} | {"vqgan_imagenet_f16_1024.ckpt", "vgg16-397923af.pth"}:
        (weights / name).write_bytes(b"")
    script = f"""
import sys
from pathlib import Path
from dckd.config import load_config
from dckd.config.sweep import load_sweep
from dckd.reporting.tables import read_table
for p in {[str(p) for p in PAPER_CONFIGS]!r}:
    load_config(p)
cells = 0
for p in {[str(p) for p in TABLE_FILES if p.parent == TABLES]!r}:
    table = read_table(p)
    for cell in table.spec.cells:
        table.cell_config(cell)
        cells += 1
for p in sorted(Path({str(EXPERIMENTS / "sweeps")!r}).glob("*.yaml")):
    load_sweep(p)
heavy = sorted({{"torch", "taming", "ray", "torchvision", "mlflow"}} & set(sys.modules))
print(cells, heavy)
assert not heavy, heavy
"""
    env = {**os.environ, "DCKD_WEIGHTS_ROOT": str(weights)}
    done = subprocess.run([sys.executable, "-c", script], cwd=in_workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) > 20


def test_cross_section_checks_fail_at_load_time_naming_the_field(in_workdir: Path) -> None:
    """Constraints a term has against the rest of the experiment fail when the file is read."""
    base = str(PAPER / "rcan_x4.yaml")
    with pytest.raises(ConfigError, match=r"rcan_x4.yaml: method.dukd.zoom_in_tiles: at most scale\*\*2 = 16"):
        load_config(base, [*NO_WEIGHTS, "method.dukd.enabled=true", "method.dukd.zoom_in_tiles=17"])
    with pytest.raises(ConfigError, match=r"rcan_x4.yaml: method.dukd.zoom_out: data.train.lq_patch 47 is not"):
        load_config(base, [*NO_WEIGHTS, "method.dukd.enabled=true", "method.dukd.zoom_out=true",
                           "data.train.lq_patch=47"])
    with pytest.raises(ConfigError, match=r"method.dcr.level_weights: 2 entries but the VQGAN encoder has 5"):
        load_config(base, [*NO_WEIGHTS, "method.dcr.level_weights=[1, 1]"])
    with pytest.raises(ConfigError, match=r"method.mipkd: student \(swinir\) and teacher \(rcan\) must share"):
        load_config(base, [*NO_WEIGHTS, "method.preset=mipkd", "student.preset=swinir_x4_student",
                           "student.checkpoint=null"])
    with pytest.raises(ConfigError, match=r"method.fakd.student_layers: 'auto' needs one backbone"):
        load_config(base, [*NO_WEIGHTS, "method.preset=fakd", "student.preset=swinir_x4_student",
                           "student.checkpoint=null"])


def test_reproduce_check_prints_a_calibrated_estimate(photos_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`dckd reproduce TABLE --check`: the plan, then each cell's timed step and the device time of the plan."""
    from dckd.cli import main

    monkeypatch.setenv("DCKD_DATA_ROOT", str(photos_root))
    args = ["reproduce", "table5", "--check", "--scale-down", "1.2e-5", "--cells", "baseline", "--seeds", "2",
            "--tables-dir", str(TABLES), *[a for o in [*NO_WEIGHTS, "ray.num_workers=2", "train.device=cpu",
                                                       "ray.use_gpu=false"] for a in ("--set", o)]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 cells, 2 runs (2 seeds per trained cell)")
    line = next(x for x in out.splitlines() if x.strip().startswith("table5:baseline") and "x1" in x)
    step_s, iterations, workers, _, runs, *device = line.split()[1:]
    assert float(step_s) > 0 and iterations == "3" and workers == "2" and runs == "2"
    total = next(x for x in out.splitlines() if x.strip().startswith("total"))
    hours = float(total.split("= ")[1].split()[0])
    # 2 seeds x 3 iterations x 2 workers x the timed step, in hours (the step is printed rounded)
    assert hours == pytest.approx(2 * 3 * 2 * float(step_s) / 3600, rel=0.05)
    assert "calibrated on cpu" in out
    assert main([*args, "--no-estimate"]) == 0
    assert "estimated device time" not in capsys.readouterr().out
