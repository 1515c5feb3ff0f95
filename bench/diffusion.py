"""Concept erasure in cross-attention on the tiny random pipeline: exactness, context anchors and PO, checked.

Builds the tiny random pipeline (unlearn.diffusion.tiny) if it is missing, runs `unlearn diffusion` on the config
(all methods, images of the 20 x 10 artist prompt set) and two ablations without images (keep_context: false,
orthogonal: false), and writes bench/results/diffusion_<config>.md/.json with the run's PNGs under
bench/results/plots_diffusion_<config>/. The model's weights are random: only the exactness and structure
numbers mean anything, and the checks are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from unlearn.diffusion.tiny import build_tiny_pipeline
from unlearn.io import atomic_write_text
from unlearn.runners.diffusion import diffusion_report, load_diffusion_config, run_diffusion
from unlearn.runtime import resolve_device

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "": {},
    "no_context": {"keep_context": False, "generate": False},
    "no_po": {"orthogonal": False, "generate": False},
}
EXACT = 1e-5


def worst(entry: dict, concepts: list[str]) -> float:
    return max(entry["kv_max_rel_error"][c] for c in concepts)


def mean_change(entry: dict, concepts: list[str]) -> float:
    return sum(entry["attn2_outputs"][c]["rel_change"] for c in concepts) / len(concepts)


def checks(runs: dict[str, dict]) -> list[tuple[str, bool, str]]:
    """Statements about the edit, each with whether it holds on these runs and the numbers behind it."""
    main, config = runs[""], runs[""]["config"]
    forget, remain = config["forget"], config["remain"]
    methods = main["methods"]
    exact = [m for m in ("more", "remap", "erase") if m in methods]
    out = []
    for method in exact:
        f, r = worst(methods[method], forget), worst(methods[method], remain)
        goal = "vanish" if method == "erase" else "equal the target's original K/V"
        out.append(
            (
                f"{method}: forget K/V {goal}, remain K/V unchanged (≤ {EXACT:g})",
                max(f, r) <= EXACT,
                f"forget {f:.1e}, remain {r:.1e}",
            )
        )
    if "uce" in methods:
        f, r = worst(methods["uce"], forget), worst(methods["uce"], remain)
        out.append(
            (
                f"uce (least squares, λ = {config['uce_lambda']:g}) is not exact at the prototypes",
                f > EXACT,
                f"forget {f:.1e}, remain {r:.1e}",
            )
        )
    if "no_context" in runs:
        for method in exact:
            with_ctx = mean_change(methods[method], remain)
            without = mean_change(runs["no_context"]["methods"][method], remain)
            out.append(
                (
                    f"{method}: context anchors shrink the change of remain prompts' attn2 outputs",
                    with_ctx < without,
                    f"mean rel. change {without:.3f} → {with_ctx:.3f}",
                )
            )
    if "no_po" in runs:
        for method in ("remap", "erase"):
            if method in methods:
                r = worst(runs["no_po"]["methods"][method], remain)
                out.append(
                    (
                        f"{method} without PO changes remain concepts' K/V (PO is what keeps them)",
                        r > EXACT,
                        f"remain max rel. error {r:.3f} without PO",
                    )
                )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/diffusion/tiny.yaml")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    stem = Path(args.config).stem
    base = load_diffusion_config(ROOT / args.config)
    if not (Path(base.model_dir) / "unet").is_dir():
        build_tiny_pipeline(base.model_dir)
    runs, walls = {}, {}
    for suffix, overrides in VARIANTS.items():
        name = f"runs/diffusion_{stem}{'_' + suffix if suffix else ''}"
        config = load_diffusion_config(ROOT / args.config, {"output_dir": name, **overrides})
        start = time.perf_counter()
        runs[suffix] = run_diffusion(config, progress=False)
        walls[suffix] = time.perf_counter() - start
    results = checks(runs)
    command = f".venv/bin/python bench/diffusion.py --config {args.config}"
    device = resolve_device(base.device)
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, device {device}"
    plots = out / f"plots_diffusion_{stem}"
    shutil.rmtree(plots, ignore_errors=True)
    plots.mkdir(parents=True)
    run_dir = Path(runs[""]["config"]["output_dir"])
    for png in run_dir.glob("*.png"):
        shutil.copy(png, plots / png.name)
    walls_text = ", ".join(f"{suffix or 'main'} {wall:.0f} s" for suffix, wall in walls.items())
    report = diffusion_report(runs[""])
    for png in run_dir.glob("*.png"):
        report = report.replace(f"]({png.name})", f"](plots_diffusion_{stem}/{png.name})")
    lines = [
        f"# Diffusion benchmark: {stem}",
        "",
        f"Command: `{command}`; machine: {machine}; wall time {walls_text}.",
        "",
        "The model is a tiny randomly initialised pipeline: its images are noise, so only the exactness and "
        "structure numbers below mean anything; LPIPS on a real Stable Diffusion checkpoint is left to users "
        "with the weights (`unlearn diffusion` computes it when `lpips` is installed locally).",
        "",
        "## Checks",
        "",
        "| statement | result | measured |",
        "|---|---|---|",
        *[f"| {text} | {'HOLDS' if ok else 'DOES NOT HOLD'} | {measured} |" for text, ok, measured in results],
        "",
        "## Ablations (no images)",
        "",
        "Mean relative change of the `attn2` outputs of remain / forget prompts, and the worst remain K/V error:",
        "",
        "| variant | method | remain rel. change | forget rel. change | remain K/V max rel. error |",
        "| :--- | :--- | ---: | ---: | ---: |",
    ]
    config = runs[""]["config"]
    for suffix, run in runs.items():
        for method, entry in run["methods"].items():
            lines.append(
                f"| {suffix or 'main'} | {method} | {mean_change(entry, config['remain']):.3f} | "
                f"{mean_change(entry, config['forget']):.3f} | {worst(entry, config['remain']):.1e} |"
            )
    lines += ["", report.replace("# Concept erasure in cross-attention", "## Main run", 1)]
    atomic_write_text(out / f"diffusion_{stem}.md", "\n".join(lines))
    record = {"command": command, "machine": machine, "wall_s": walls, "checks": results, "runs": runs}
    atomic_write_text(out / f"diffusion_{stem}.json", json.dumps(record, indent=2, default=str))
    for text, ok, measured in results:
        print(f"{'HOLDS' if ok else 'DOES NOT HOLD'} {text}: {measured}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
