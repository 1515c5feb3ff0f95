"""Layer benchmark of issue 5: Erase / Remap / MoRE at the last, 2nd-last and 3rd-last block (paper Table 7).

    .venv/bin/python bench/layers.py [--configs configs/digits_layers.yaml]

Runs each config (resumable) and writes bench/results/layers_<name>.md and .json. Checks are reported,
never asserted.
"""

from __future__ import annotations

import sys

from runner import Benchmark

DEFAULT_CONFIGS = ["configs/digits_layers.yaml"]
LR = "0.1"
WHERE = ("last", "2nd-last, pooled", "3rd-last, pooled", "2nd-last, flat", "3rd-last, flat")


def checks(metrics: dict) -> list[tuple[str, bool, str]]:
    """MoRE's advantage under KR and its output-level quality at each depth."""
    summary = {name: result["summary"] for name, result in metrics["methods"].items()}

    def hm(row: str, lr: str | None = None) -> float:
        return (summary[row]["kr"][lr] if lr else summary[row])["HM_t"]["mean"]

    depths = [where for where in WHERE if f"MoRE ({where})" in summary]
    found = []
    for where in depths:
        rows = [f"{name} ({where})" for name in ("Erase", "Remap", "MoRE")]
        found.append(
            (
                f"at the {where} block MoRE has the best HM_t under KR (lr {LR})",
                max(rows, key=lambda row: hm(row, LR)) == rows[2],
                ", ".join(f"{row} {hm(row, LR):.1f}" for row in rows),
            )
        )
    found.append(
        (
            "MoRE keeps its output-level HM_t within 2 points of the last block at shallower blocks",
            all(abs(hm(f"MoRE ({where})") - hm("MoRE (last)")) <= 2 for where in depths),
            ", ".join(f"{where} {hm(f'MoRE ({where})'):.2f}" for where in depths),
        )
    )
    return found


BENCHMARK = Benchmark(
    kind="layers",
    title="Layer benchmark",
    checks=checks,
    check_header=("statement", "## Unlearning at shallower layers (paper Table 7), checked on our numbers"),
    verdicts=("HOLDS", "DOES NOT HOLD"),
    default_configs=DEFAULT_CONFIGS,
    resume=True,
    plot_prefix="plots_layers_",
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main(__doc__.splitlines()[0]))
