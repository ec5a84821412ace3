"""``dckd eval CHECKPOINT``: score a trained student on benchmark folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dckd.config import BenchmarkConfig, load_config
from dckd.errors import CheckpointError, ConfigError
from dckd.training.checkpoint import safe_load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a checkpoint on benchmark folders (PSNR/SSIM)")
    p.add_argument("checkpoint", help="a dckd training checkpoint (checkpoints/iter_*.pt)")
    p.add_argument("--config", help="experiment YAML (default: the config stored in the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", choices=["val", "test"], default="test",
                   help="which benchmark list of the config to score (test falls back to val)")
    p.add_argument("--bench", action="append", default=[], metavar="NAME=DIR[:LR_DIR]",
                   help="an extra benchmark: SR HR folder (and LR folder), or INPUT:TARGET for deblur/derain")
    p.add_argument("--weights", choices=["ema", "student"], default="ema")
    p.add_argument("--save-dir", help="write the restored images here, one folder per set")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--scores-csv", default=None, metavar="PATH",
                   help="write per-image PSNR/SSIM (per tile with eval.score_tiles) as CSV, for dckd's paired "
                        "statistics")
    p.set_defaults(func=run)


def _extra(spec: str, task: str) -> BenchmarkConfig:
    if "=" not in spec:
        raise ConfigError(f"--bench {spec!r}: expected NAME=DIR[:DIR]")
    name, dirs = spec.split("=", 1)
    first, _, second = dirs.partition(":")
    try:
        if task == "sr":
            return BenchmarkConfig(name=name, hr_dir=first, lr_dir=second or None)
        return BenchmarkConfig(name=name, input_dir=first, target_dir=second or None)
    except ValueError as exc:
        raise ConfigError(f"--bench {spec!r}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    import torch

    from dckd.data.datasets import BenchmarkSet
    from dckd.data.specs import benchmark_sets, pairs_for
    from dckd.evaluation.benchmarks import evaluate_sets, protocol_for
    from dckd.evaluation.metrics import json_ready
    from dckd.training.engine import build_network, resolve_device

    state = safe_load(args.checkpoint)
    if not isinstance(state, dict) or "ema" not in state or "config" not in state:
        raise CheckpointError(f"{args.checkpoint}: not a dckd training checkpoint")
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        cfg = load_config(data=state["config"], overrides=args.overrides)
    device = resolve_device(cfg.train.device)
    model = build_network(cfg.student.model_copy(update={"checkpoint": None}), cfg.scale)
    try:
        model.load_state_dict(state[args.weights])
    except RuntimeError as exc:
        raise CheckpointError(f"{args.checkpoint}: does not fit the student of the config: {exc}") from exc
    model.to(device).eval()
    sets = benchmark_sets(cfg, args.split) or (benchmark_sets(cfg, "val") if args.split == "test" else [])
    for spec in args.bench:
        b = _extra(spec, cfg.task)
        sets.append((b.name, BenchmarkSet(pairs_for(b, cfg.task, cfg.scale), cfg.scale)))
    if not sets:
        raise ConfigError("no benchmark to score: the config lists none and no --bench was given")
    with torch.no_grad():
        results = evaluate_sets(model, sets, protocol_for(cfg), device, save_dir=args.save_dir,
                                per_image=bool(args.scores_csv), tiles=cfg.eval.score_tiles)
    if args.scores_csv:
        from dckd.evaluation.benchmarks import scores_csv
        from dckd.training.rundir import write_text

        write_text(Path(args.scores_csv), scores_csv(results), "per-image scores")
        results = {name: {k: v for k, v in m.items() if k != "per_image"} for name, m in results.items()}
    if args.json:
        report = {"iteration": state.get("iteration"), "weights": args.weights, "results": results}
        print(json.dumps(json_ready(report), indent=2, allow_nan=False))
    else:
        print(f"{'set':<16}{'images':>8}{'PSNR':>10}{'SSIM':>9}")
        for name, m in results.items():
            print(f"{name:<16}{m['count']:>8}{m['psnr']:>10.2f}{m['ssim']:>9.4f}")
    return 0
