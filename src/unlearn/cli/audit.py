"""`unlearn audit CONFIG.yaml` on the command line (runner: `unlearn.runners.audit.run_audit`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _audit(args: argparse.Namespace) -> int:
    from unlearn.config import load_config
    from unlearn.runners.audit import run_audit

    overrides = {key: value for key, value in (("output_dir", args.output_dir), ("seeds", args.seeds)) if value}
    config = load_config(args.config, overrides)
    start = time.perf_counter()
    audit = run_audit(config, progress=not args.quiet, resume=not args.fresh)
    out = Path(config.output_dir)
    print(f"wrote {out / 'audit.md'} and {out / 'audit.json'} in {time.perf_counter() - start:.0f} s")
    chance = audit["chance"]
    for row, entry in audit["rows"].items():
        worst = entry["worst"]
        print(f"  {row:<16} worst D_ft {worst['D_ft']['mean']:6.2f} (chance {chance:.1f}) by {worst['attack']}")
    return 0


def add_parser(commands) -> None:
    """Register `unlearn audit` on the CLI's subparsers."""
    audit = commands.add_parser(
        "audit",
        help="attack every method's output to see how much of the forgotten class comes back",
        description="Train or load Original and Retrain, unlearn with every method of CONFIG for every seed, and "
        "run the attack suite (KR, converged logistic regression, MLPs, k-NN, few-shot, repeated queries, "
        "inversion of a linear edit, edit removal, relearning; settings in the config's `audit:` section). Writes "
        "audit.md/audit.json and plots to the output directory; finished cells are reused unless --fresh.",
    )
    audit.add_argument("config", help="YAML experiment config with a class-wise task (see configs/*_audit.yaml)")
    audit.add_argument("--output-dir", help="where to write the audit (overrides output_dir of the config)")
    audit.add_argument("--seeds", type=int, nargs="+", help="seeds of the methods and attacks, e.g. --seeds 0 1 2")
    audit.add_argument("--fresh", action="store_true", help="recompute every cell instead of resuming")
    audit.add_argument("--quiet", action="store_true", help="no progress bars")
    audit.set_defaults(func=_audit)
