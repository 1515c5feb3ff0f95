"""LLM run metrics -> `metrics.json`, a Markdown `report.md` and a forget-vs-retain accuracy scatter (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.report.markdown import MISSING, markdown_table
from unlearn.report.plots import _save, place_labels, zoomed_limits

COLUMNS = (  # (header, how to read the cell from a method's "eval" dict)
    ("forget acc (↓)", lambda e: _pct(e.get("forget_acc"))),
    ("retain acc (↑)", lambda e: _pct(e.get("retain_acc"))),
    ("forget log p", lambda e: _num(e.get("forget_logprob"))),
    ("retain log p", lambda e: _num(e.get("retain_logprob"))),
    ("general ppl (↓)", lambda e: _num(e.get("ppl"))),
    ("MIA AUC", lambda e: _num(e.get("mia_auc"), 3)),
    ("params changed", lambda e: f"{100 * e['params']['fraction']:.3f} %" if "params" in e else MISSING),
    ("relearn acc (held-out half)", lambda e: _relearn(e.get("relearn"))),
)
OPTIONAL_COLUMNS = (  # shown only when some method has the metric
    ("forget paraphrased acc", "forget_paraphrased_acc", lambda e: _pct(e.get("forget_paraphrased_acc"))),
    ("forget truth preference", "forget_truth_preference", lambda e: _pct(e.get("forget_truth_preference"))),
    ("forget / retain acc under projection attack", "projection_attack", lambda e: _attack(e.get("projection_attack"))),
    ("forget / retain acc, 8-bit / 4-bit weights", "quantised", lambda e: _quantised(e.get("quantised"))),
)
SHIFT_COLUMNS = (
    ("forget → target expert, before/after", lambda e: _share(e.get("shift_forget"))),
    ("retain → target expert, before/after", lambda e: _share(e.get("shift_retain"))),
    ("top-k overlap forget (target layer / all)", lambda e: _overlap(e.get("shift_forget"))),
    ("top-k overlap retain (target layer / all)", lambda e: _overlap(e.get("shift_retain"))),
)


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _relearn(record: dict | None) -> str:
    if not record:
        return MISSING
    return f"{100 * record['heldout_half_before']:.1f} → {100 * record['heldout_half_after']:.1f}"


def _attack(record: dict | None) -> str:
    if not record:
        return MISSING
    return f"{_pct(record.get('forget_acc'))} / {_pct(record.get('retain_acc'))}"


def _quantised(record: dict | None) -> str:
    """Per bit width "forget / retain" (or the first MCQ acc when there is no Q/A), widest first."""
    if not record:
        return MISSING
    cells = []
    for bits in sorted(record, key=int, reverse=True):
        scores = record[bits]
        if "forget_acc" in scores or "retain_acc" in scores:
            cells.append(_attack(scores))
        else:
            mcq = [v["acc"] for k, v in sorted(scores.items()) if k.startswith("mcq_")]
            cells.append(_pct(mcq[0]) if mcq else MISSING)
    return " ; ".join(cells)


def _mcq(record: dict | None) -> str:
    return MISSING if not record else f"{100 * record['acc']:.1f} / {100 * record['acc_norm']:.1f}"


def _share(shift: dict | None) -> str:
    return MISSING if not shift else f"{shift['target_share_before']:.2f} / {shift['target_share_after']:.2f}"


def _overlap(shift: dict | None) -> str:
    return (
        MISSING if not shift else f"{shift['topk_overlap_target_layer']:.2f} / {shift['topk_overlap_all_layers']:.2f}"
    )


def llm_markdown(metrics: dict) -> str:
    """report.md text: settings, the results table, MoE selection shift (when MoE), definitions, plots."""
    methods = metrics["methods"]
    data = metrics.get("data", {})
    lines = [
        f"# LLM unlearning report: {metrics['name']}",
        "",
        f"- **Model:** {metrics['model']} ({metrics['num_parameters']:,} parameters, MoE: {metrics['moe']})",
        f"- **Device:** {metrics['device']}, {metrics.get('world_size', 1)} process(es)"
        + (f", weights in {metrics['dtype']}" if metrics.get("dtype") else ""),
    ]
    if data:
        lines += [
            f"- **Facts:** {data['forget_facts']} forget / {data['retain_facts']} retain / {data['heldout_facts']} "
            f"held-out facts, 3 paraphrases each; vocabulary {data['vocab_size']}",
            f"- **Forget/retain token overlap:** target {100 * data['overlap_target']:.0f} %, measured "
            f"{100 * data['overlap_measured']:.1f} %",
        ]
    if metrics.get("training"):
        t = metrics["training"]
        acc = ", ".join(f"{k} {100 * v:.1f} %" for k, v in t["accuracy"].items())
        lines.append(f"- **Original training:** {t['steps']} steps, answer accuracy {acc}")
    if metrics.get("target_expert") is not None:
        layer, expert = metrics["target_expert"]
        lines.append(f"- **Target expert (attribution on the Original):** layer {layer}, expert {expert}")
    lines += [
        "",
        "Answer accuracy: share of (prompt, answer) pairs whose answer greedy decoding reproduces exactly; log p: "
        "mean log-probability of the true answer; general ppl: perplexity of held-out general text; params "
        "changed: share of parameter elements that differ from the Original; relearn: answer accuracy on the odd "
        "half of the forget facts before → after finetuning on the even half.",
        "",
        "## Results",
        "",
    ]
    columns = list(COLUMNS)
    columns += [
        (header, read) for header, key, read in OPTIONAL_COLUMNS if any(key in e["eval"] for e in methods.values())
    ]
    mcq = sorted({k for entry in methods.values() for k in entry["eval"] if k.startswith("mcq_")})
    columns += [(f"{k[4:]} MCQ acc / acc_norm", lambda e, k=k: _mcq(e.get(k))) for k in mcq]
    rows = []
    for name, entry in methods.items():
        cells = [reader(entry["eval"]) for _, reader in columns]
        rows.append([name, *cells, _num(entry.get("time_s"), 1)])
    columns.append(("time (s)", None))
    lines.append(markdown_table(["Method", *(header for header, _ in columns)], rows))
    if metrics.get("target_expert") is not None:
        rows = [[name, *(reader(entry["eval"]) for _, reader in SHIFT_COLUMNS)] for name, entry in methods.items()]
        lines += [
            "",
            "## MoE expert selection shift",
            "",
            "Share of tokens whose top-k experts at the target layer include the target expert (Original / after "
            "unlearning), and mean overlap |top-k before ∩ top-k after| / k per token.",
            "",
            markdown_table(["Method", *(header for header, _ in SHIFT_COLUMNS)], rows),
        ]
    if metrics.get("failed"):
        lines += ["", "## Failed (no results)", "", *[f"- **{row}**: {why}" for row, why in metrics["failed"].items()]]
    if metrics.get("notes"):
        lines += ["", "## Not measured", "", *[f"- {note}" for note in metrics["notes"]]]
    lines += [
        "",
        "## Attacks and MCQ",
        "",
        "Quantisation: every weight matrix of the decoder layers fake-quantised (round-to-nearest, symmetric, one "
        "scale per output channel), then evaluated again. MCQ: lm-eval-harness's zero-shot prompt and scoring "
        "(acc: highest log-likelihood continuation; acc_norm: divided by its length in characters).",
    ]
    lines += ["", "## MIA", "", f"**MIA definition.** {metrics['mia_definition']}"]
    if metrics.get("plots"):
        lines += ["", "## Plots", "", *[f"![{Path(p).stem}]({p})" for p in metrics["plots"]]]
    return "\n".join(lines) + "\n"


def plot_forget_retain(metrics: dict, path: str | Path) -> Path:
    """Forget answer accuracy (x) against retain answer accuracy (y), one panel per method (top left is best).

    Rows of one method at several lrs ("<method> lr=<lr>") are joined by a line in lr order and labelled with
    their lr where there is room; the other methods' curves are drawn faintly behind, and the Original is a
    black star in every panel. The axes, shared by all panels, are zoomed to the points."""
    curves: dict[str, list[tuple[float, float, float, str]]] = {}
    for name, entry in metrics["methods"].items():
        x, y = entry["eval"].get("forget_acc"), entry["eval"].get("retain_acc")
        if x is None or y is None or not (np.isfinite(x) and np.isfinite(y)):
            continue
        method, _, lr = name.partition(" lr=")
        curves.setdefault(method, []).append((float(lr) if lr else 0.0, 100 * x, 100 * y, lr))
    for points in curves.values():
        points.sort()
    original = curves.pop("Original", None)
    every = [p for points in [*curves.values(), original or []] for p in points]
    columns = min(3, max(1, len(curves)))
    rows = -(-max(1, len(curves)) // columns)
    fig = Figure(figsize=(3.6 * columns + 0.5, 3.2 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    xlim, ylim = zoomed_limits([p[1] for p in every]), zoomed_limits([p[2] for p in every])
    palette = matplotlib.colormaps["tab10"]
    for index, (ax, (method, points)) in enumerate(zip(axes, curves.items(), strict=False)):
        for other, others in curves.items():
            if other != method:
                ax.plot([p[1] for p in others], [p[2] for p in others], color="0.85", linewidth=0.8, zorder=1)
        color = palette(index % 10)
        xs, ys = [p[1] for p in points], [p[2] for p in points]
        ax.plot(xs, ys, marker="o", markersize=4, color=color, zorder=3)
        if original:
            ax.plot(original[0][1], original[0][2], marker="*", markersize=10, color="black", zorder=4)
        ax.set(title=method, xlim=xlim, ylim=ylim)
        ax.title.set_fontsize(9)
        labelled = [(x, y, lr) for _, x, y, lr in points if lr]
        if labelled:
            place_labels(ax, *zip(*labelled, strict=True), [color] * len(labelled), fontsize=6)
    fig.supxlabel("forget answer accuracy (%) ↓")
    fig.supylabel("retain answer accuracy (%) ↑")
    note = "; ★ Original" if original else ""
    fig.suptitle(f"{metrics['name']}: forgetting vs utility per method (labels: lr{note}; axes zoomed to the data)")
    return _save(fig, path)


def write_llm_report(metrics: dict, out_dir: str | Path, plots: bool = True) -> None:
    """Write the plot (when asked and accuracies exist), then metrics.json and report.md into `out_dir`."""
    out_dir = Path(out_dir)
    has_acc = any(np.isfinite(e["eval"].get("forget_acc", np.nan)) for e in metrics["methods"].values())
    if plots and has_acc:
        plot_forget_retain(metrics, out_dir / "plots" / "forget_vs_retain.png")
        metrics["plots"] = ["plots/forget_vs_retain.png"]
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "report.md", llm_markdown(metrics))
