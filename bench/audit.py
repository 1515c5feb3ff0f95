"""Irreversibility benchmark of issue 9: the attack suite on Original, Retrain, ESC, Erase, Remap, MoRE and MoRE-T.

    .venv/bin/python bench/audit.py [--configs configs/digits_audit.yaml configs/shapes_audit.yaml]

Runs each config like `unlearn audit` (resumable: finished (row, seed) cells of runs/audit_<name>/ are read
back), writes bench/results/audit_<name>.md and .json with the plots next to them, and checks the issue's
statements on the measured numbers (HOLDS / DOES NOT HOLD, never asserted).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from unlearn.audit_run import run_audit
from unlearn.config import load_config
from unlearn.report.audit import audit_markdown

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["configs/digits_audit.yaml", "configs/shapes_audit.yaml"]
NEAR_CHANCE = 5.0  # "near chance": at most this many points above 100 / num_classes
LEAK = 20.0  # "leaks": more than this many points above chance
PROBES = ("logreg", "MLP 256", "5-NN euclidean")  # the user's report: ESC and Erase lose to each (~98 %)
VARIANT = "MoRE-T"
Check = tuple[str, bool, str]


def checks(audit: dict) -> list[Check]:
    """(statement, whether the numbers support it, the numbers) for one audit."""
    rows, chance = audit["rows"], audit["chance"]

    def ft(row: str, attack: str) -> float:
        return rows[row]["attacks"][attack]["D_ft"]["mean"]

    def output_rt(row: str) -> float:
        return rows[row]["attacks"]["model output"]["D_rt"]["mean"]

    found = []
    if "MoRE" in rows:
        worst = rows["MoRE"]["worst"]
        found.append(
            (
                f"a stronger attacker than KR gets the forgotten class back from MoRE (worst > chance + {LEAK:.0f})",
                worst["D_ft"]["mean"] > chance + LEAK,
                f"{worst['D_ft']['mean']:.1f} by {worst['attack']} (KR lr 0.1: {ft('MoRE', 'KR lr=0.1'):.1f})",
            )
        )
    for row in ("ESC", "Erase"):
        if row in rows:
            values = {probe: ft(row, probe) for probe in PROBES}
            found.append(
                (
                    f"{row} loses to a converged logreg, an MLP and 5-NN (each >= 80)",
                    min(values.values()) >= 80,
                    ", ".join(f"{probe} {value:.1f}" for probe, value in values.items()),
                )
            )
    if VARIANT in rows:
        worst = rows[VARIANT]["worst"]
        found.append(
            (
                f"{VARIANT}'s worst case (edit kept) stays near chance (<= {chance:.0f} + {NEAR_CHANCE:.0f})",
                worst["D_ft"]["mean"] <= chance + NEAR_CHANCE,
                f"{worst['D_ft']['mean']:.1f} ± {worst['D_ft']['std']:.1f} by {worst['attack']}; "
                f"any-D_rt worst {rows[VARIANT]['worst_any']['D_ft']['mean']:.1f} "
                f"({rows[VARIANT]['worst_any']['attack']}, D_rt {rows[VARIANT]['worst_any']['D_rt']['mean']:.1f})",
            )
        )
        found.append(
            (
                f"{VARIANT} keeps remain-test accuracy within 1 point of the Original (model output)",
                output_rt(VARIANT) >= output_rt("Original") - 1,
                f"{output_rt(VARIANT):.2f} vs Original {output_rt('Original'):.2f}",
            )
        )
        relearn = [a for a in rows[VARIANT]["attacks"] if a.startswith("relearn")]
        if relearn and "Retrain" in rows:
            last = relearn[-1]
            found.append(
                (
                    f"{VARIANT} relearns no faster than Retrain ({last}, within 5 points)",
                    ft(VARIANT, last) <= ft("Retrain", last) + 5,
                    ", ".join(f"{row} {ft(row, last):.1f}" for row in rows if last in rows[row]["attacks"]),
                )
            )
    inverted = {row: e["attacks"]["inversion E⁺"] for row, e in rows.items() if "inversion E⁺" in e["attacks"]}
    if "Remap (no PO)" in inverted:
        found.append(
            (
                "the white-box inversion recovers an invertible edit (Remap without PO, D_ft >= 90)",
                inverted["Remap (no PO)"]["D_ft"]["mean"] >= 90,
                ", ".join(f"{row} {value['D_ft']['mean']:.1f}" for row, value in inverted.items()),
            )
        )
    removed = {
        row: e["attacks"]["edit removed"]["D_ft"]["mean"] for row, e in rows.items() if "edit removed" in e["attacks"]
    }
    if removed:
        original = ft("Original", "model output")
        found.append(
            (
                "removing a feature edit from released weights gives the Original's forget accuracy back",
                all(abs(value - original) < 1e-6 for value in removed.values()),
                f"Original {original:.1f}; " + ", ".join(f"{row} {value:.1f}" for row, value in removed.items()),
            )
        )
    return found


def write_markdown(out: Path, path: str, audit: dict, wall: float, machine: str) -> list[Check]:
    stem = Path(path).stem
    found = checks(audit)
    lines = [
        f"# Irreversibility benchmark: {audit['name']}",
        "",
        f"Command: `.venv/bin/python bench/audit.py --configs {path}`; machine: {machine}; wall time {wall:.0f} s "
        "(cells finished by an earlier call are read back, not recomputed).",
        "",
        "## The issue's statements, checked on our numbers",
        "",
        "| statement | result | measured |",
        "|---|---|---|",
        *[f"| {text} | {'HOLDS' if ok else 'DOES NOT HOLD'} | {measured} |" for text, ok, measured in found],
        "",
        audit_markdown(audit).replace("](plots/", f"](plots_audit_{stem}/").replace("\n# ", "\n## ", 1),
    ]
    (out / f"audit_{stem}.md").write_text("\n".join(lines))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--rerender", action="store_true", help="rewrite the .md from the saved .json, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in args.configs:
        stem = Path(path).stem
        saved_path = out / f"audit_{stem}.json"
        if args.rerender:
            saved = json.loads(saved_path.read_text())
            write_markdown(out, path, saved["audit"], saved["wall_s"], saved["machine"])
            continue
        config = load_config(ROOT / path, {"output_dir": f"runs/audit_{stem}"})
        start = time.perf_counter()
        audit = run_audit(config, progress=False, resume=True)
        wall = time.perf_counter() - start
        plot_dir = out / f"plots_audit_{stem}"
        shutil.rmtree(plot_dir, ignore_errors=True)
        shutil.copytree(Path(config.output_dir) / "plots", plot_dir)
        machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {audit['device']}"
        found = write_markdown(out, path, audit, wall, machine)
        record = {"command": f".venv/bin/python bench/audit.py --configs {path}", "wall_s": wall, "machine": machine}
        saved_path.write_text(json.dumps({**record, "checks": found, "audit": audit}, indent=2, default=str))
        for text, ok, measured in found:
            print(f"[{audit['name']}] {'HOLDS' if ok else 'DOES NOT HOLD'} {text}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
