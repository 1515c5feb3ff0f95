"""`unlearn report`: rewrite report.md from a run directory's metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unlearn.errors import UnlearnError


def _report(args: argparse.Namespace) -> int:
    from unlearn.report.tables import write_report
    from unlearn.validate import check_metrics

    path = Path(args.run_dir) / "metrics.json"
    if not path.is_file():
        raise UnlearnError(f"{path} does not exist: pass a run directory written by `unlearn run`.")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UnlearnError(f"{path} is not valid UTF-8 JSON ({error}); rerun `unlearn run` to rewrite it.") from error
    write_report(check_metrics(metrics, path), args.run_dir)
    print(f"wrote {Path(args.run_dir) / 'report.md'}")
    return 0


def add_parser(commands) -> None:
    """Register `unlearn report`."""
    report = commands.add_parser("report", help="rewrite report.md from a run directory's metrics.json")
    report.add_argument("run_dir", help="a directory written by `unlearn run`")
    report.set_defaults(func=_report)
