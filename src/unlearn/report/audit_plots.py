"""Relearning curves of the audit: forget-test accuracy against finetuning steps, one PNG per method, Retrain dashed."""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure

from unlearn.report.plots import _save

RELEARN = re.compile(r"relearn (?:k=(\d+), )?(\d+) steps")


def relearn_curves(attacks: dict[str, dict], default_samples: int) -> dict[int, list[tuple[int, float, float]]]:
    """{k: [(steps, mean D_ft, std D_ft), ...]} from an audit row's "relearn ..." attacks, sorted by steps."""
    curves: dict[int, list[tuple[int, float, float]]] = {}
    for name, attack in attacks.items():
        found = RELEARN.fullmatch(name)
        if found:
            k = int(found.group(1) or default_samples)
            curves.setdefault(k, []).append((int(found.group(2)), attack["D_ft"]["mean"], attack["D_ft"]["std"]))
    return {k: sorted(points) for k, points in sorted(curves.items())}


def plot_relearn_curves(audit: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per method (named in the title): D_ft after s relearning steps on k forget samples, for each k,
    with Retrain's curve for the same k dashed (a model that never saw the class); chance dotted."""
    default = audit.get("settings", {}).get("relearn_samples", 10)
    rows = audit["rows"]
    reference = relearn_curves(rows["Retrain"]["attacks"], default) if "Retrain" in rows else {}
    paths = []
    for name, entry in rows.items():
        curves = relearn_curves(entry["attacks"], default)
        if not curves or name == "Retrain":
            continue
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.subplots()
        for index, (k, points) in enumerate(curves.items()):
            color = f"C{index}"
            steps, means, stds = zip(*points, strict=True)
            ax.errorbar(steps, means, yerr=stds, color=color, marker="o", capsize=3, label=f"{name}, k={k}")
            if k in reference:
                ref_steps, ref_means, _ = zip(*reference[k], strict=True)
                ax.plot(ref_steps, ref_means, color=color, linestyle="--", marker="x", label=f"Retrain, k={k}")
        ax.axhline(audit["chance"], color="black", linestyle=":", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.set(
            xlabel="relearning steps (log)",
            ylabel="forget-test accuracy (%)",
            ylim=(-3, 103),
            title=f"Relearning {name} vs Retrain (k forget samples)",
        )
        ax.legend(fontsize=7)
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
        paths.append(_save(fig, Path(out_dir) / f"relearn_{slug}.png"))
    return paths
