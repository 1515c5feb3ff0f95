"""PNG figures of a run: prototype cosine heatmaps (paper Fig. 3/6), 2-D feature embeddings (Fig. 1), KR bars.

Figures are drawn on an explicit Agg canvas (no pyplot, no screen, no global figure state); each function saves
one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from unlearn.errors import UnlearnError
from unlearn.io import atomic_path
from unlearn.report.tables import lr_key, method_summary

FORGET_COLOR = "tab:red"
DPI = 150
ANNOTATE_MAX_CLASSES = 12
LEGEND_MAX_CLASSES = 10


def _save(fig: Figure, path: str | Path) -> Path:
    """Render `fig` with the Agg backend to a PNG at `path` (parents created) and return the path."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def zoomed_limits(values: Sequence[float], low: float = 0.0, high: float = 100.0) -> tuple[float, float]:
    """Axis limits around the data (a margin of 8 % of its range, at least 2 units), kept within [low, high] ± 3."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    margin = max(2.0, 0.08 * (hi - lo))
    return max(low - 3, lo - margin), min(high + 3, hi + margin)


def place_labels(
    ax: Axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], colors, fontsize=7, skip_crowded=True
) -> None:
    """Write each text next to its point where it overlaps no other label and no point (greedy, in screen space).

    Candidate offsets ring the point at growing distances; the first free one is taken, with a thin leader line
    when the label sits away from its point. A point with no free spot stays unlabelled (`skip_crowded`) or
    gets the least crowded spot. Call after the limits are set.
    """
    fig = ax.figure
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout, so the data -> screen transform below is the final one
    renderer = canvas.get_renderer()
    scale = fig.dpi / 72  # points -> pixels
    points = ax.transData.transform(np.column_stack([xs, ys]))
    dot = 4 * scale
    taken = [(x - dot, y - dot, x + dot, y + dot) for x, y in points]
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for (px, py), x, y, text, color in zip(points, xs, ys, texts, colors, strict=True):
        probe = ax.text(0, 0, text, fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        probe.remove()
        width, height = box.width, box.height
        best, best_hits = None, None
        for radius in (4, 9, 15, 22, 30):
            for dx, dy in directions:
                ox, oy = dx * radius * scale, dy * radius * scale
                left = px + ox - (width if dx < 0 else 0 if dx > 0 else width / 2)
                bottom = py + oy - (height if dy < 0 else 0 if dy > 0 else height / 2)
                rect = (left, bottom, left + width, bottom + height)
                hits = sum(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in taken)
                if best_hits is None or hits < best_hits:
                    best, best_hits = (rect, radius), hits
                if hits == 0:
                    break
            if best_hits == 0:
                break
        if best_hits and skip_crowded:
            continue  # no free spot: leave this point unlabelled rather than write over another label
        rect, radius = best
        taken.append(rect)
        ax.annotate(
            text,
            (x, y),
            xytext=((rect[0] - px) / scale, (rect[1] - py) / scale),  # the label's lower left corner
            textcoords="offset points",
            fontsize=fontsize,
            color=color,
            ha="left",
            va="bottom",
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.6} if radius > 9 else None,
        )


def _class_labels(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """Tick labels: the given names, else the class indices."""
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise UnlearnError(f"class_names has {len(class_names)} names for {num_classes} classes; pass one per class")
    return [str(name) for name in class_names]


def _cosine_matrix(rows: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
    """Cosine similarity between the columns of two d x k prototype matrices (a zero prototype gives 0)."""
    rows = F.normalize(rows.detach().double().cpu(), dim=0)
    cols = F.normalize(cols.detach().double().cpu(), dim=0)
    return (rows.T @ cols).numpy()


def _heatmap(ax: Axes, matrix: np.ndarray, labels: list[str], forget: set[int]) -> AxesImage:
    """Draw one cosine heatmap with class ticks, forget classes in red, values written in when small enough."""
    image = ax.imshow(matrix, cmap="coolwarm", vmin=-1.0, vmax=1.0)
    k = matrix.shape[0]
    long_names = k > ANNOTATE_MAX_CLASSES or max(len(label) for label in labels) > 3
    ax.set_xticks(range(k), labels, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), labels)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for index, tick in enumerate(ticks):
            if index in forget:
                tick.set_color(FORGET_COLOR)
                tick.set_fontweight("bold")
    if k <= ANNOTATE_MAX_CLASSES:
        for i in range(k):
            for j in range(k):
                color = "white" if abs(matrix[i, j]) > 0.6 else "black"
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    return image


def plot_prototype_cosine(
    before: torch.Tensor,
    after: torch.Tensor,
    forget_classes: Sequence[int],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    method: str | None = None,
) -> Path:
    """Cosine similarity of class prototypes P (d x k, columns = class means): before vs before, before vs after.

    Left panel shows how correlated forget and remain prototypes are (paper Fig. 3, top); right panel shows what
    unlearning did to each prototype (Fig. 3 bottom / Fig. 6): remain classes should keep a diagonal near 1.
    `method` names the method in the title.
    """
    if before.ndim != 2 or before.shape != after.shape:
        raise UnlearnError(
            f"before and after must be d x k prototype matrices of the same shape, got {tuple(before.shape)} "
            f"and {tuple(after.shape)}"
        )
    num_classes = before.shape[1]
    labels = _class_labels(num_classes, class_names)
    forget = set(forget_classes)
    size = max(4.0, 0.45 * num_classes)
    fig = Figure(figsize=(2 * size + 1.5, size), layout="constrained")
    left, right = fig.subplots(1, 2)
    _heatmap(left, _cosine_matrix(before, before), labels, forget)
    left.set(title="Before: cos(P_i, P_j)", xlabel="class (before)", ylabel="class (before)")
    image = _heatmap(right, _cosine_matrix(before, after), labels, forget)
    right.set(title="Before & after: cos(P_i, P'_j)", xlabel="class (after)", ylabel="class (before)")
    fig.colorbar(image, ax=[left, right], label="cosine similarity", shrink=0.8)
    named = ", ".join(labels[c] for c in sorted(forget))
    fig.suptitle(f"{method or 'Unlearning'}: what it did to the class prototypes (forget: {named})")
    return _save(fig, path)


def _embed_2d(before: np.ndarray, after: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N x d features before and after -> two N x 2 coordinate sets in ONE shared basis.

    PCA: the principal axes and centre of the features before unlearning, applied to both, so a point that did
    not move stays put. t-SNE (scikit-learn) has no basis to reuse: it embeds both sets together.
    """
    if method == "tsne":
        from sklearn.manifold import TSNE

        both = np.concatenate([before, after])
        perplexity = min(30.0, (len(both) - 1) / 3)
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(both)
        return coords[: len(before)], coords[len(before) :]
    centre = before.mean(axis=0, keepdims=True)
    _, _, components = np.linalg.svd(before - centre, full_matrices=False)
    basis = components[:2].T
    pad = ((0, 0), (0, 2 - basis.shape[1]))
    return np.pad((before - centre) @ basis, pad), np.pad((after - centre) @ basis, pad)


def _remain_colors(count: int) -> list:
    """Muted per-class colours that avoid red: tab10 without its red for up to 9 classes, else viridis."""
    if count <= 9:
        palette = [matplotlib.colormaps["tab10"](i) for i in range(10) if i != 3]
        return palette[:count]
    return [matplotlib.colormaps["viridis"](x) for x in np.linspace(0, 1, count)]


def _scatter_classes(
    ax: Axes, coords: np.ndarray, labels: np.ndarray, forget: set[int], class_names: list[str] | None
) -> None:
    """Remain classes muted underneath, forget classes in red on top; per-class legend only when short."""
    present = sorted(set(labels.tolist()))
    remain = [c for c in present if c not in forget]
    per_class_legend = len(remain) <= LEGEND_MAX_CLASSES
    for index, (cls, color) in enumerate(zip(remain, _remain_colors(len(remain)), strict=True)):
        mask = labels == cls
        name = class_names[cls] if class_names else str(cls)
        label = f"class {name}" if per_class_legend else ("remain classes" if index == 0 else None)
        ax.scatter(*coords[mask].T, s=6, color=color, alpha=0.45, linewidths=0, label=label, zorder=1)
    for cls in (c for c in present if c in forget):
        mask = labels == cls
        name = class_names[cls] if class_names else str(cls)
        style = {"s": 14, "color": FORGET_COLOR, "edgecolors": "black", "linewidths": 0.3, "zorder": 3}
        ax.scatter(*coords[mask].T, label=f"class {name} (forget)", **style)


def plot_embedding(
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
    forget_classes: Sequence[int],
    path: str | Path,
    method: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """2-D embedding of N x d features (N x ... is flattened) before and after unlearning, side by side (Fig. 1).

    The same random subset of at most `max_points` samples is shown in both panels, in one shared basis (the
    PCA of the features before; t-SNE embeds both together) with shared axes, so the panels can be compared
    point for point: a forget cluster that survives unlearning stays a separate red blob. `title` names the method.
    """
    if method not in ("pca", "tsne"):
        raise UnlearnError(f"method must be 'pca' or 'tsne', got {method!r}")
    if before.ndim < 2 or after.ndim < 2 or not (len(before) == len(after) == len(labels)):
        raise UnlearnError(
            f"before/after must be N x d (or N x ...) features with one label each, got {tuple(before.shape)}, "
            f"{tuple(after.shape)} and {len(labels)} labels"
        )
    if len(labels) < 4:
        raise UnlearnError(f"plot_embedding needs at least 4 samples, got {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(labels), generator=generator)[:max_points]
    label_array = labels.detach().cpu()[keep].numpy()
    names = list(class_names) if class_names is not None else None
    forget = set(forget_classes)
    axis_name = "t-SNE" if method == "tsne" else "PC"
    fig = Figure(figsize=(11, 5), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    arrays = [features.detach().double().cpu()[keep].flatten(1).numpy() for features in (before, after)]
    coords = _embed_2d(*arrays, method, seed)
    for ax, points, stage in zip(axes, coords, ("Before", "After"), strict=True):
        _scatter_classes(ax, points, label_array, forget, names)
        ax.set(title=f"{stage} unlearning", xlabel=f"{axis_name} 1", ylabel=f"{axis_name} 2")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2, frameon=False)
    basis = "one t-SNE of both" if method == "tsne" else "PCA axes of the features before, shared"
    fig.suptitle(f"{title or 'Unlearning'}: features before and after ({basis}; forget classes in red)")
    return _save(fig, path)


def _grid(panels: int, panel_width: float, max_width: float = 14.0) -> tuple[int, int]:
    """(columns, rows) for `panels` panels of `panel_width` inches: as many side by side as fit in `max_width`."""
    columns = max(1, min(panels, int(max_width // panel_width)))
    return columns, -(-panels // columns)


def plot_kr(metrics: dict, path: str | Path) -> Path:
    """Grouped bars of forget accuracy (D_f, D_ft, mean ± std) per method under KR linear probing, one panel per lr.

    Low bars mean the probe could not recover the forgotten classes; the dashed line is chance (100 / num_classes)
    when metrics has "num_classes". Methods without KR results are left out.
    """
    summaries = {name: method_summary(entry) for name, entry in metrics.get("methods", {}).items()}
    lrs = [lr_key(lr) for lr in metrics.get("kr_lrs", [])] or list(
        dict.fromkeys(lr for summary in summaries.values() for lr in summary.get("kr", {}))
    )
    with_kr = [name for name, summary in summaries.items() if summary.get("kr")]
    if not lrs or not with_kr:
        raise UnlearnError("plot_kr needs at least one method with 'kr' results in metrics['methods']")
    panel_width = max(4.0, 0.45 * len(with_kr) + 1.5)
    columns, rows = _grid(len(lrs), panel_width)
    fig = Figure(figsize=(panel_width * columns, 3.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(lrs) :]:
        ax.set_visible(False)
    x = np.arange(len(with_kr))
    width = 0.38
    for ax, lr in zip(axes, lrs, strict=False):
        for offset, split, color in ((-width / 2, "D_f", "tab:red"), (width / 2, "D_ft", "tab:orange")):
            stats = [summaries[name].get("kr", {}).get(lr, {}).get(split) for name in with_kr]
            means = [s["mean"] if s else np.nan for s in stats]
            stds = [s["std"] if s else 0.0 for s in stats]
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, color=color, label=split)
        if metrics.get("num_classes"):
            ax.axhline(100 / metrics["num_classes"], color="black", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, with_kr, rotation=30, ha="right")
        ax.set(title=f"KR setting: lr = {lr}", ylim=(0, 105), ylabel="forget accuracy after probing (%)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle("Knowledge retention: forget accuracy recovered by a linear probe (lower is better)")
    return _save(fig, path)


def plot_hm_kr(metrics: dict, path: str | Path) -> Path:
    """HM at output level (x) against HM after KR probing (y), one point per method (mean ± std), one panel per lr.

    Points near the diagonal keep their forgetting when a probe retrains the head; points far below it
    forget only at the output (the probe recovers the forgotten classes). Methods without KR are left out.
    """
    summaries = {name: method_summary(entry) for name, entry in metrics.get("methods", {}).items()}
    lrs = [lr_key(lr) for lr in metrics.get("kr_lrs", [])]
    with_kr = [name for name, summary in summaries.items() if summary.get("kr") and summary.get("HM")]
    if not lrs or not with_kr:
        raise UnlearnError("plot_hm_kr needs 'kr_lrs' and at least one method with HM and 'kr' results")
    columns, rows = _grid(len(lrs), 4.6)
    fig = Figure(figsize=(4.6 * columns + 2.6, 4.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax in axes[len(lrs) :]:
        ax.set_visible(False)
    colors = matplotlib.colormaps["tab20"].resampled(max(len(with_kr), 2))
    markers = "osD^vP*Xh<>p"
    # output-level HM of the methods sits in a narrow band near 100: zoom to it and name what falls outside
    shown = [name for name in with_kr if summaries[name]["HM"]["mean"] >= 50] or with_kr
    xlim = zoomed_limits([summaries[name]["HM"]["mean"] for name in shown])
    outside = [f"{name} (HM {summaries[name]['HM']['mean']:.1f})" for name in with_kr if name not in shown]
    for ax, lr in zip(axes, lrs, strict=False):
        ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1)
        for index, name in enumerate(with_kr):
            x, y = summaries[name]["HM"], summaries[name].get("kr", {}).get(lr, {}).get("HM")
            if y is None:
                continue
            style = {"marker": markers[index % len(markers)], "color": colors(index), "markersize": 6}
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], capsize=2, linestyle="none", **style)
        ax.set(title=f"KR setting: lr = {lr}", xlabel="HM, output level (%)", ylabel="HM after KR probing (%)")
        ax.set(xlim=xlim, ylim=(-2, 102))
    handles = [
        Line2D([], [], marker=markers[i % len(markers)], color=colors(i), linestyle="none", label=name)
        for i, name in enumerate(with_kr)
    ]  # a legend, not labels at the points: points of similar methods sit on top of each other
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False, title="method")
    fig.suptitle("Forgetting that survives a linear probe: HM vs HM under KR (top right is best)")
    if outside:
        fig.supxlabel(f"left of the x range: {', '.join(outside)}", fontsize=8)
    return _save(fig, path)


def plot_sweep(metrics: dict, param: str, path: str | Path, log_x: bool = False) -> Path:
    """HM_t at output level and under KR (one line per lr) against one method parameter (paper Fig. 7).

    The points are the rows whose config entry sets `param` (e.g. num_experts, target_class); mean ± std
    over seeds.
    """
    entries = metrics.get("config", {}).get("methods", [])
    points = sorted(
        (entry["params"][param], entry.get("label") or entry["name"])
        for entry in entries
        if param in entry.get("params", {}) and (entry.get("label") or entry["name"]) in metrics.get("methods", {})
    )
    if not points:
        raise UnlearnError(f"plot_sweep: no method of this run sets {param!r}")
    x = np.array([value for value, _ in points], dtype=float)
    summaries = [method_summary(metrics["methods"][row]) for _, row in points]
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.subplots()
    series = [("output level", lambda s: s.get("HM_t"))]
    lrs = [lr_key(lr) for lr in metrics.get("kr_lrs", [])]
    series += [(f"KR lr {lr}", lambda s, lr=lr: s.get("kr", {}).get(lr, {}).get("HM_t")) for lr in lrs]
    for label, pick in series:
        stats = [pick(summary) for summary in summaries]
        means = [s["mean"] if s else np.nan for s in stats]
        stds = [s["std"] if s else 0.0 for s in stats]
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=label)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{value:g}" for value in x])
    ax.set(xlabel=param, ylabel="HM_t (%)", ylim=(0, 102), title=f"Sensitivity to {param}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_audit_heatmap(audit: dict, path: str | Path) -> Path:
    """Forget-test accuracy (mean over seeds) of every attack (rows) on every method (columns), chance in the title.

    Dark cells are attacks that got the forgotten class back; a column near chance everywhere survives the suite.
    """
    rows = audit["rows"]
    names = list(rows)
    attacks = list(dict.fromkeys(a for entry in rows.values() for a in entry["attacks"]))
    if not names or not attacks:
        raise UnlearnError("plot_audit_heatmap needs at least one method with attacks in audit['rows']")
    values = np.array(
        [[rows[n]["attacks"][a]["D_ft"]["mean"] if a in rows[n]["attacks"] else np.nan for n in names] for a in attacks]
    )
    fig = Figure(figsize=(1.1 * len(names) + 3.5, 0.28 * len(attacks) + 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(
                j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color="white" if value > 60 else "black"
            )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(attacks)), attacks, fontsize=7)
    fig.colorbar(image, ax=ax, label="forget-test accuracy (%)")
    ax.set_title(f"Irreversibility audit: forget-test accuracy per attack (chance {audit['chance']:.1f})")
    return _save(fig, path)


def plot_audit_worst(audit: dict, path: str | Path) -> Path:
    """Worst-case forget-test accuracy per method (mean ± std), edit kept and edit removed; chance dashed."""
    rows = audit["rows"]
    names = list(rows)
    fig = Figure(figsize=(max(5.0, 0.9 * len(names)), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.38
    for offset, key, color, label in (
        (-width / 2, "worst", "tab:red", "edit kept"),
        (width / 2, "worst_with_bypass", "tab:grey", "incl. edit removed"),
    ):
        stats = [rows[name][key]["D_ft"] for name in names]
        ax.bar(
            x + offset,
            [s["mean"] for s in stats],
            width,
            yerr=[s["std"] for s in stats],
            capsize=3,
            color=color,
            label=label,
        )
    ax.axhline(audit["chance"], color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylabel="worst-case forget-test accuracy (%)", ylim=(0, 105), title="Worst case over the attack suite")
    ax.legend(fontsize=8)
    return _save(fig, path)
