"""The CPU demo behind ``make demo``: distillation on scikit-image's colour photographs.

Steps: write the photographs as a small x2 SR dataset (a fixed train/test split), train a
small teacher from scratch, then the same small student four times (scratch, logits, DCKD,
DCKD*) from the same initial weights as one Tune grid on the local Ray instance, register the
best, print a Y-PSNR/SSIM table on the held-out photographs and write the report.
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

from dckd.config import ExperimentConfig, load_config
from dckd.data.prepare import PHOTO_TEST, PHOTO_TRAIN, photo
from dckd.errors import ConfigError

# Held-out photographs are never seen in training; the rest are cut into random patches. The
# split is the one `dckd data prepare photos` uses (one definition, in dckd.data.prepare).
TRAIN_PHOTOS = PHOTO_TRAIN
TEST_PHOTOS = PHOTO_TEST


def prepare_photos(root: Path) -> tuple[Path, Path]:
    """Write the split as PNGs (once); returns (train HR folder, test HR folder)."""
    from dckd.imageio import write_image

    folders = (root / "train_hr", root / "test_hr")
    for folder, names in zip(folders, (TRAIN_PHOTOS, TEST_PHOTOS)):
        for name in names:
            path = folder / f"{name}.png"
            if not path.exists():
                write_image(path, photo(name))
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
        f"data.test.0.hr_dir={data / 'test_hr'}",
        *overrides,
    ])


def _bicubic_scores(cfg: ExperimentConfig) -> dict[str, float]:
    """The interpolation baseline on the same held-out images (torch bicubic upsampling)."""
    import torch
    import torch.nn.functional as F

    from dckd.data.specs import benchmark_sets
    from dckd.evaluation.benchmarks import evaluate_sets, protocol_for

    class Bicubic(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=cfg.scale, mode="bicubic", align_corners=False)

    res = evaluate_sets(Bicubic(), benchmark_sets(cfg, "val"), protocol_for(cfg), torch.device("cpu"))
    return next(iter(res.values()))


def default_table_path() -> Path:
    return Path(__file__).resolve().parents[2] / "experiments" / "demo_table.yaml"


def run_demo(out: Path, config: Path | None = None, quick: bool = False, progress: bool = True,
             table: Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the whole demo; returns the table rows (also written to ``out/results.json`` and ``.md``).

    The teacher trains in this process; the students (``experiments/demo_table.yaml``: scratch,
    logits, DCKD, DCKD*) then run as one Tune grid of Ray Train runs on the local Ray instance
    (the ``reproduce`` runner of the Ray layer), tracked in ``out/mlflow.db``; the best student
    is registered as ``demo-student@champion`` and the report lands in ``out/report/``.
    """
    from dckd.cli.train import load_runner

    base = (config or default_config_path()).resolve()
    table_path = (table or default_table_path()).resolve()
    out = out.resolve()
    data = out / "data"
    prepare_photos(data)
    from dckd.models import count_params
    from dckd.training.engine import build_network
    from dckd.training.loop import train_local

    scale_iters = ["train.iterations=40", "train.val_every=40", "train.ckpt_every=40",
                   "train.log_every=10"] if quick else []
    probe = _config(base, out, "demo-teacher", [])
    if probe.teacher is None:
        raise ConfigError(f"{base}: the demo config needs a 'teacher' section")
    teacher_spec = probe.teacher.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    uri = tracking_uri or f"sqlite:///{(out / 'mlflow.db').as_posix()}"

    def label(spec) -> str:
        return spec.preset or spec.resolved_backbone

    def n_params(spec) -> int:
        return count_params(build_network(spec.model_copy(update={"checkpoint": None}), probe.scale))

    rows: list[dict[str, Any]] = []
    bicubic = _bicubic_scores(probe)
    rows.append({"model": "bicubic", "method": "-", "params": 0, **_scores(bicubic), "minutes": 0.0})

    # The teacher (10x the student's parameters) trains twice as long at half the learning rate:
    # at the students' 4e-3 it diverges.
    teacher_iters = [f"train.iterations={probe.train.iterations * 2}"] if not quick else []
    teacher_iters.append(f"optim.lr={probe.optim.lr / 2}")
    print(f"\n== demo-teacher: {probe.train.iterations * (1 if quick else 2)} iterations in this process",
          file=sys.stderr, flush=True)
    tic = time.perf_counter()
    t_cfg = _config(base, out, "demo-teacher", [f"student={json.dumps(teacher_spec)}", "method.preset=scratch",
                                                "teacher=null", f"tracking.tracking_uri={uri}",
                                                *scale_iters, *teacher_iters])
    t_sum = train_local(t_cfg, resume=True, progress=progress)
    teacher_ckpt = out / "demo-teacher" / "student.pth"
    rows.append({"model": label(probe.teacher), "method": "teacher (scratch)", "params": n_params(probe.teacher),
                 **_scores(next(iter(t_sum["val"].values()))), "minutes": (time.perf_counter() - tic) / 60})
    notes: list[str] = list(t_sum["notes"])

    print("\n== students: one Tune grid of Ray Train runs (scratch, logits, DCKD, DCKD*)", file=sys.stderr,
          flush=True)
    tic = time.perf_counter()
    overrides = [f"data.train.hr_dir={data / 'train_hr'}", f"data.val.0.hr_dir={data / 'test_hr'}",
                 f"data.test.0.hr_dir={data / 'test_hr'}", f"teacher.checkpoint={teacher_ckpt}", *scale_iters]
    # The table's cells on this run's base config (which may differ from experiments/demo.yaml).
    import yaml

    table_doc = yaml.safe_load(table_path.read_text())
    table_doc["base"] = str(base)
    run_table = out / "demo_table.yaml"
    run_table.write_text(yaml.safe_dump(table_doc, sort_keys=False))
    summary = load_runner("reproduce")(str(run_table), None, None, overrides, str(out / "report"), uri, None)
    minutes = (time.perf_counter() - tic) / 60
    paired = read_paired(summary["report"].get("paired_csv"))
    best = None
    for r in summary["results"]:
        bench = next(iter(r["metrics"].values()), None)
        if bench is None:
            continue
        row = {"model": label(probe.student), "method": r["cell"], "params": n_params(probe.student),
               "psnr": bench[0], "ssim": bench[1], "minutes": minutes, "run_id": r["run_id"],
               "vs": paired.get(r["cell"], {})}
        rows.append(row)
        if r["status"] == "ok" and (best is None or row["psnr"] > best["psnr"]):
            best = row
    notes += [n for n in summary.get("notes", []) if n not in notes]
    registered = _register_best(uri, best) if best is not None else None
    result = {"scale": probe.scale, "test_images": list(TEST_PHOTOS), "rows": rows, "notes": notes,
              "tiles": probe.eval.score_tiles, "references": REFERENCES,
              "quick": quick, "students_minutes": minutes, "registered": registered,
              "report": summary["report"], "mlflow": uri, "errors": summary["errors"]}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(format_table(result) + "\n")
    return result


def _register_best(uri: str, best: dict[str, Any]) -> str | None:
    """The best student by held-out PSNR goes to the registry as ``demo-student@champion``."""
    from mlflow import MlflowClient

    from dckd.tracking import register_logged_model, student_of

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_id = student_of(client, best["run_id"])
    if model_id is None:
        return None
    version = register_logged_model(client, uri, model_id, best["run_id"], "demo-student", "champion")
    return f"models:/demo-student@champion (version {version}, {best['method']})"


REFERENCES = ("scratch", "logits")


def read_paired(path: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """cell -> reference -> {delta, low, high, p, resolved, n} from the report's ``paired.csv``."""
    import csv

    if not path or not Path(path).is_file():
        return {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["cell"], {})[row["reference"]] = {
                "delta": float(row["delta_psnr"]), "low": float(row["ci_low"]), "high": float(row["ci_high"]),
                "p": float(row["wilcoxon_p"]) if row["wilcoxon_p"] else None,
                "resolved": row["resolved"] == "true", "n": int(row["images"])}
    return out


def _interval(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    return f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def verdict(result: dict[str, Any]) -> list[str]:
    """Sentences drawn from the intervals: which differences the held-out tiles resolve, which not."""
    resolved, unresolved = [], []
    n = None
    for r in result["rows"]:
        for ref, d in (r.get("vs") or {}).items():
            n = d["n"]
            text = f"{r['method']} vs {ref} ({d['delta']:+.3f} dB)"
            if d["resolved"]:
                resolved.append(f"{text}: {'better' if d['delta'] > 0 else 'worse'}")
            else:
                unresolved.append(text)
    if n is None:
        return []
    unit = (f"{n} paired {result['tiles']}x{result['tiles']} tiles of the {len(result['test_images'])} held-out "
            "photographs" if result.get("tiles") else f"{n} paired held-out images")
    # (the tiles are the resampled units; the difference is the photographs' PSNR difference)
    lines = [f"Over {unit}, the 95% interval of the paired PSNR difference excludes zero for: "
             + ("; ".join(resolved) if resolved else "none") + "."]
    lines.append("It includes zero (a difference this test set cannot tell from noise) for: "
                 + ("; ".join(unresolved) if unresolved else "none") + ".")
    if result.get("tiles"):
        lines.append("Tiles of one photograph are neighbours, not independent images, and every student is one "
                     "seed: the intervals say what holds on these two photographs for these runs, not on other "
                     "images or seeds.")
    return lines


def _scores(m: dict[str, Any]) -> dict[str, float]:
    return {"psnr": float(m["psnr"]), "ssim": float(m["ssim"])}


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"x{result['scale']} SR on held-out photographs ({', '.join(result['test_images'])}): "
        f"Y-PSNR/SSIM, border {result['scale']} px cropped" + (" [quick run]" if result.get("quick") else ""),
        "",
        "| model | method | params | Y-PSNR (dB) | Y-SSIM | train min | Δ vs scratch [95% CI] | Δ vs logits [95% CI] |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        params = "-" if not r["params"] else f"{r['params'] / 1e3:.1f}K"
        vs = r.get("vs") or {}
        lines.append(f"| {r['model']} | {r['method']} | {params} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['minutes']:.1f} | {_interval(vs.get('scratch'))} | {_interval(vs.get('logits'))} |")
    if any(r.get("vs") for r in result["rows"]):
        lines += ["", "Δ: the student's Y-PSNR minus the reference's (dB) on each held-out photograph, recomputed "
                      "from the errors of its fixed 48x48 tiles and averaged over the photographs, with a 95% "
                      "bootstrap interval that resamples tiles within each photograph (report: paired.csv, forest "
                      "plot).", *verdict(result)]
    if result.get("students_minutes") is not None:
        lines += ["", f"students trained together on Ray in {result['students_minutes']:.1f} min "
                      "(the train-min column repeats that total)"]
    if result.get("registered"):
        lines += [f"registered: {result['registered']}"]
    if result.get("report"):
        lines += [f"report: {result['report'].get('html', '')}"]
    if result["notes"]:
        lines += ["", *[f"note: {n}" for n in result["notes"]]]
    return "\n".join(lines)
