"""Quality benchmark of issue 3: MoRE vs ESC (and Remap/Erase) on digits and on generated shapes.

    .venv/bin/python bench/quality.py [--configs configs/digits_more.yaml configs/shapes_allcnn.yaml]

Runs each config end to end (3 seeds), then checks the bars below and writes
bench/results/quality_<name>.md and .json. Bars are reported as PASS/FAIL, never asserted:
- output level: MoRE HM >= 99 and |D_rt(MoRE) − D_rt(Original)| <= 1;
- KR at every probe lr: MoRE's D_f and D_ft < 15 %;
- KR at lr 0.1: ESC's D_f clearly higher than MoRE's (by >= 20 points).
"""

from __future__ import annotations

import sys

from runner import Benchmark

DEFAULT_CONFIGS = ["configs/digits_more.yaml", "configs/shapes_allcnn.yaml"]


def bars(metrics: dict) -> list[tuple[str, bool, str]]:
    """(bar, passed, measured) for the quality bars of issue 3."""
    summary = {name: result["summary"] for name, result in metrics["methods"].items()}
    more, original = summary["MoRE"], summary["Original"]
    checks = [
        ("MoRE HM >= 99", more["HM"]["mean"] >= 99, f"HM {more['HM']['mean']:.2f}"),
        (
            "MoRE D_rt within 1 point of Original",
            abs(more["D_rt"]["mean"] - original["D_rt"]["mean"]) <= 1,
            f"D_rt {more['D_rt']['mean']:.2f} vs {original['D_rt']['mean']:.2f}",
        ),
    ]
    for lr, kr in more["kr"].items():
        d_f, d_ft = kr["D_f"]["mean"], kr["D_ft"]["mean"]
        checks.append(
            (f"KR lr {lr}: MoRE D_f and D_ft < 15", d_f < 15 and d_ft < 15, f"D_f {d_f:.2f}, D_ft {d_ft:.2f}")
        )
    if "ESC" in summary:
        esc = summary["ESC"]["kr"]["0.1"]["D_f"]["mean"]
        ours = more["kr"]["0.1"]["D_f"]["mean"]
        checks.append(("KR lr 0.1: ESC D_f >= MoRE D_f + 20", esc >= ours + 20, f"ESC {esc:.2f} vs MoRE {ours:.2f}"))
    return checks


BENCHMARK = Benchmark(
    kind="quality",
    title="Quality benchmark",
    checks=bars,
    check_header=("bar", "## Bars"),
    verdicts=("PASS", "FAIL"),
    default_configs=DEFAULT_CONFIGS,
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main(__doc__.splitlines()[0]))
