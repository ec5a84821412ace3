"""The CPU demo behind ``make demo``: distillation on scikit-image's colour photographs.

Steps: write the photographs as a small x2 SR dataset (a fixed train/test split), train a
small teacher from scratch, then the same small student three times (scratch, logits, DCKD)
from the same initial weights, and print a Y-PSNR/SSIM table on the held-out photographs.
It uses tiny RCAN presets and a reduced VQGAN encoder (random weights: no download is
possible) so that the whole job fits in minutes on two CPU cores; experiments/demo.yaml says
what differs from the paper.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dckd.config import ExperimentConfig, load_config
from dckd.errors import ConfigError

# Held-out photographs are never seen in training; the rest are cut into random patches.
TRAIN_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left")
TEST_PHOTOS = ("chelsea", "rocket")
STUDENT_METHODS = ("scratch", "logits", "dckd")


def _photo(name: str) -> np.ndarray:
    from skimage import data

    if name == "motorcycle_left":
        return data.stereo_motorcycle()[0]
    return getattr(data, name)()


def prepare_photos(root: Path) -> tuple[Path, Path]:
    """Write the split as PNGs (once); returns (train HR folder, test HR folder)."""
    from dckd.imageio import write_image

    folders = (root / "train_hr", root / "test_hr")
    for folder, names in zip(folders, (TRAIN_PHOTOS, TEST_PHOTOS)):
        for name in names:
            path = folder / f"{name}.png"
            if not path.exists():
                write_image(path, np.ascontiguousarray(_photo(name)[..., :3]))
    return folders


def default_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "experiments" / "demo.yaml"


def _config(base: Path, out: Path, name: str, overrides: list[str]) -> ExperimentConfig:
    data = out / "data"
    return load_config(base, [
        f"name={name}",
        f"output_dir={out / name}",
        f"data.train.hr_dir={data / 'train_hr'}",
        f"data.val.0.hr_dir={data / 'test_hr'}",
        *overrides,
    ])


def _bicubic_scores(cfg: ExperimentConfig) -> dict[str, float]:
    """The interpolation baseline on the same held-out images (torch bicubic upsampling)."""
    import torch
    import torch.nn.functional as F

    from dckd.data.specs import benchmark_sets
    from dckd.evaluation import evaluate_sets, protocol_for

    class Bicubic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=cfg.scale, mode="bicubic", align_corners=False)

    res = evaluate_sets(Bicubic(), benchmark_sets(cfg, "val"), protocol_for(cfg), torch.device("cpu"))
    return next(iter(res.values()))


def run_demo(out: Path, config: Path | None = None, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole demo; returns the table rows (also written to ``out/results.json`` and ``.md``)."""
    base = config or default_config_path()
    out = out.resolve()
    prepare_photos(out / "data")
    from dckd.engine import build_network
    from dckd.loop import train_local
    from dckd.models import count_params

    scale_iters = ["train.iterations=40", "train.val_every=40", "train.ckpt_every=40",
                   "train.log_every=10"] if quick else []
    probe = _config(base, out, "demo-teacher", [])
    if probe.teacher is None:
        raise ConfigError(f"{base}: the demo config needs a 'teacher' section")
    teacher_spec = probe.teacher.model_dump(mode="json", exclude_none=True, exclude_defaults=True)

    def label(spec) -> str:
        return spec.preset or spec.resolved_backbone

    def n_params(spec) -> int:
        return count_params(build_network(spec.model_copy(update={"checkpoint": None}), probe.scale))

    rows: list[dict[str, Any]] = []
    bicubic = _bicubic_scores(probe)
    rows.append({"model": "bicubic", "method": "-", "params": 0, **_scores(bicubic), "minutes": 0.0})

    def train(name: str, overrides: list[str]) -> dict[str, Any]:
        cfg = _config(base, out, name, overrides + scale_iters)
        print(f"\n== {name}: {cfg.train.iterations} iterations, method {cfg.method.preset} "
              f"({', '.join(cfg.method.enabled_terms)})", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        summary = train_local(cfg, resume=True, progress=progress)
        summary["minutes"] = (time.perf_counter() - tic) / 60
        return summary

    teacher_iters = [f"train.iterations={probe.train.iterations * 2}"] if not quick else []
    t_sum = train("demo-teacher", [f"student={json.dumps(teacher_spec)}", "method.preset=scratch",
                                   "teacher=null", *teacher_iters])
    teacher_ckpt = out / "demo-teacher" / "student.pth"
    rows.append({"model": label(probe.teacher), "method": "teacher (scratch)", "params": n_params(probe.teacher),
                 **_scores(next(iter(t_sum["val"].values()))), "minutes": t_sum["minutes"]})
    notes: list[str] = list(t_sum["notes"])
    for method in STUDENT_METHODS:
        s = train(f"demo-{method}", [f"method.preset={method}", f"teacher.checkpoint={teacher_ckpt}"])
        notes += [n for n in s["notes"] if n not in notes]
        rows.append({"model": label(probe.student), "method": method, "params": n_params(probe.student),
                     **_scores(next(iter(s["val"].values()))), "minutes": s["minutes"]})
    result = {"scale": probe.scale, "test_images": list(TEST_PHOTOS), "rows": rows, "notes": notes,
              "quick": quick}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(format_table(result) + "\n")
    return result


def _scores(m: dict[str, Any]) -> dict[str, float]:
    return {"psnr": float(m["psnr"]), "ssim": float(m["ssim"])}


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"x{result['scale']} SR on held-out photographs ({', '.join(result['test_images'])}): "
        f"Y-PSNR/SSIM, border {result['scale']} px cropped" + (" [quick run]" if result.get("quick") else ""),
        "",
        "| model | method | params | Y-PSNR (dB) | Y-SSIM | train min |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        params = "-" if not r["params"] else f"{r['params'] / 1e3:.1f}K"
        lines.append(f"| {r['model']} | {r['method']} | {params} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['minutes']:.1f} |")
    if result["notes"]:
        lines += ["", *[f"note: {n}" for n in result["notes"]]]
    return "\n".join(lines)
