"""Router benchmark of issue 5: stochastic MoRE vs the conditional routers (paper Table 6 / Table 14 layout).

    .venv/bin/python bench/router.py [--configs configs/digits_router.yaml]

Runs each config (resumable), then checks the paper's Appendix D statements on our numbers and writes
bench/results/router_<name>.md and .json with the plots. Checks are reported, never asserted.
"""

from __future__ import annotations

import sys

from runner import Benchmark

DEFAULT_CONFIGS = ["configs/digits_router.yaml"]
LR = "0.1"


def checks(metrics: dict) -> list[tuple[str, bool, str]]:
    """(statement of the paper, whether our numbers support it, the numbers)."""
    summary = {name: result["summary"] for name, result in metrics["methods"].items()}
    routers = [name for name in summary if name.startswith("MoRE")]

    def mean(row: str, metric: str, lr: str | None = None) -> float:
        block = summary[row]["kr"][lr] if lr else summary[row]
        return block[metric]["mean"]

    found = []
    if {"MoRE-P-T", "MoRE-P-T-B"} <= set(summary):
        t, tb = mean("MoRE-P-T", "load_cv"), mean("MoRE-P-T-B", "load_cv")
        found.append(("forget load balancing (-B) lowers the expert load CV of -T", tb < t, f"CV {t:.2f} → {tb:.2f}"))
    best = max(routers, key=lambda row: mean(row, "HM_t", LR))
    found.append(
        (
            f"the stochastic router gives the best HM_t under KR (lr {LR})",
            best == "MoRE",
            ", ".join(f"{row} {mean(row, 'HM_t', LR):.2f}" for row in routers),
        )
    )
    best = max(routers, key=lambda row: mean(row, "HM_t"))
    found.append(
        (
            "a conditional router reaches the best HM_t at output level (paper: on CIFAR-10)",
            best != "MoRE",
            ", ".join(f"{row} {mean(row, 'HM_t'):.2f}" for row in routers),
        )
    )
    return found


BENCHMARK = Benchmark(
    kind="router",
    title="Router benchmark",
    checks=checks,
    check_header=("statement", "## Appendix D's statements, checked on our numbers"),
    verdicts=("HOLDS", "DOES NOT HOLD"),
    default_configs=DEFAULT_CONFIGS,
    resume=True,
    plot_prefix="plots_router_",
)


if __name__ == "__main__":
    sys.exit(BENCHMARK.main(__doc__.splitlines()[0]))
