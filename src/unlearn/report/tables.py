"""Per-seed run records -> mean ± std summaries -> `metrics.json` and a Markdown `report.md` (paper Table 1 style)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from unlearn.errors import UnlearnError
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.report.audit import audit_markdown
from unlearn.report.markdown import MISSING, Stats, markdown_table, slug, summarize

ACC_SPLITS = ("D_f", "D_r", "D_ft", "D_rt")
KR_METRICS = (*ACC_SPLITS, "HM", "HM_t")
COST_METRICS = ("time_s", "peak_mem_mb")
DIAGNOSTICS = ("load_cv", "avg_gap")  # shown only when some method reports them
RUN_METRICS = (*KR_METRICS, "MIA", *COST_METRICS, *DIAGNOSTICS)
REFERENCE_METHODS = ("Original", "Retrain")

OUTPUT_COLUMNS = (
    ("D_f", "D_f (↓)"),
    ("D_r", "D_r (↑)"),
    ("D_ft", "D_ft (↓)"),
    ("D_rt", "D_rt (↑)"),
    ("HM", "HM (↑)"),
    ("HM_t", "HM_t (↑)"),
    ("MIA", "MIA"),
    ("time_s", "time (s)"),
    ("peak_mem_mb", "peak mem (MB)"),
)
DIAGNOSTIC_COLUMNS = (("load_cv", "expert load CV"),)
SAMPLE_COLUMNS = (  # paper Table 4: random-sample forgetting, D_t = the whole test set
    ("D_f", "D_f"),
    ("D_r", "D_r"),
    ("D_rt", "D_t"),
    ("MIA", "MIA"),
    ("avg_gap", "Avg. Gap (↓)"),
    ("time_s", "time (s)"),
    ("peak_mem_mb", "peak mem (MB)"),
)
KR_COLUMNS = OUTPUT_COLUMNS[:6]
BOLD_BEST = ("HM", "HM_t")


def lr_key(lr: float | str) -> str:
    """Canonical string key of a KR probe lr (0.1 -> "0.1", 1e-4 -> "0.0001"), so floats and JSON keys match."""
    return f"{float(lr):g}"


def _flat_metrics(record: dict) -> dict[str, float]:
    """One run (or one KR probe) as metric name -> value; absent or None values are left out."""
    flat = {split: value for split, value in record.get("acc", {}).items() if split in ACC_SPLITS}
    flat.update({name: record[name] for name in ("HM", "HM_t", "MIA", *DIAGNOSTICS) if record.get(name) is not None})
    flat.update({name: value for name, value in record.get("cost", {}).items() if name in COST_METRICS})
    return flat


def _summarize_flat(records: list[dict[str, float]], names: Iterable[str]) -> dict[str, Stats]:
    """Summaries of each named metric over the records that have it (metrics no record has are omitted)."""
    summary = {}
    for name in names:
        values = [record[name] for record in records if record.get(name) is not None]
        if values:
            summary[name] = summarize(values)
    return summary


def _union(keys: Iterable[Iterable[str]]) -> list[str]:
    """Keys of several dicts in first-seen order, without repeats."""
    return list(dict.fromkeys(key for group in keys for key in group))


def summarize_runs(runs: list[dict]) -> dict:
    """A method's per-seed run records -> {metric: {"mean","std"}}, "kr": {lr: {...}} and "phases": {phase: {...}}.

    Metrics come from "acc", "HM", "HM_t", "MIA" and "cost"; a metric absent from some runs is summarised over the
    runs that have it. KR lrs are keyed by `lr_key`.
    """
    if not runs:
        raise UnlearnError("summarize_runs needs at least one run record, got an empty list")
    summary: dict = _summarize_flat([_flat_metrics(run) for run in runs], RUN_METRICS)
    probes = [{lr_key(lr): probe for lr, probe in run.get("kr", {}).items()} for run in runs]
    if lrs := _union(probes):
        summary["kr"] = {
            lr: _summarize_flat([_flat_metrics(probe[lr]) for probe in probes if lr in probe], KR_METRICS) for lr in lrs
        }
    phases = [run.get("cost", {}).get("phases", {}) for run in runs]
    if phase_names := _union(phases):
        summary["phases"] = {
            name: _summarize_flat([run_phases[name] for run_phases in phases if name in run_phases], COST_METRICS)
            for name in phase_names
        }
    return summary


def method_summary(entry: dict) -> dict:
    """The stored "summary" of a metrics.json method entry, else one computed from its "runs" ({} with neither)."""
    if entry.get("summary"):
        return entry["summary"]
    return summarize_runs(entry["runs"]) if entry.get("runs") else {}


def _cell(stats: Stats | None, single_run: bool, bold: bool = False) -> str:
    """ "mean ± std" with 2 decimals, the plain mean for a single run, "–" when missing; optionally bold."""
    if stats is None:
        return MISSING
    text = f"{stats['mean']:.2f}" if single_run else f"{stats['mean']:.2f} ± {stats['std']:.2f}"
    return f"**{text}**" if bold else text


def _best_means(blocks: dict[str, dict[str, Stats]], metric: str) -> float | None:
    """Highest mean of `metric` (rounded as shown) among non-reference methods, None if none has it."""
    means = [
        round(block[metric]["mean"], 2)
        for name, block in blocks.items()
        if name not in REFERENCE_METHODS and metric in block
    ]
    return max(means) if means else None


def _results_table(
    blocks: dict[str, dict[str, Stats]], single_run: dict[str, bool], columns: tuple[tuple[str, str], ...]
) -> str:
    """One row per method over `columns`, best HM / HM_t among non-reference methods in bold (ties all bold)."""
    best = {metric: _best_means(blocks, metric) for metric in BOLD_BEST}
    rows = []
    for name, block in blocks.items():
        cells = [name]
        for metric, _ in columns:
            stats = block.get(metric)
            bold = (
                name not in REFERENCE_METHODS
                and stats is not None
                and best.get(metric) is not None
                and round(stats["mean"], 2) == best[metric]
            )
            cells.append(_cell(stats, single_run[name], bold))
        rows.append(cells)
    return markdown_table(["Method", *(header for _, header in columns)], rows)


def _kr_lrs(metrics: dict, summaries: dict[str, dict]) -> list[str]:
    """KR probe lrs in the order of metrics["kr_lrs"], else in first-seen order over the method summaries."""
    if metrics.get("kr_lrs"):
        return [lr_key(lr) for lr in metrics["kr_lrs"]]
    return _union(summary.get("kr", {}) for summary in summaries.values())


def _header(metrics: dict) -> str:
    """Title, run settings and how to read the tables."""

    def joined(key: str) -> str:
        values = metrics.get(key)
        return ", ".join(str(value) for value in values) if values else MISSING

    references = ", ".join(REFERENCE_METHODS)
    return "\n".join(
        [
            f"# Unlearning report: {metrics.get('dataset', MISSING)} / {metrics.get('model', MISSING)}",
            "",
            f"- **Dataset:** {metrics.get('dataset', MISSING)}",
            f"- **Model:** {metrics.get('model', MISSING)}",
            f"- **Forget classes:** {joined('forget_classes')}"
            if metrics.get("task", "class") == "class"
            else f"- **Forget:** {metrics.get('split_sizes', {}).get('D_f', MISSING)} random training samples "
            "(sample-wise task; D_t is the whole test set; Avg. Gap is the mean absolute difference to Retrain "
            "over D_f, D_r, D_t and MIA)",
            f"- **Seeds:** {joined('seeds')}",
            f"- **Device:** {metrics.get('device', MISSING)}",
            "",
            "Accuracies, HM and MIA are in percent. Cells show mean ± std over seeds (population std, ddof = 0); "
            f"reference rows ({references}) with a single run show the plain value; {MISSING} marks a metric "
            "that was not measured. ↓: lower is better, ↑: higher is better, MIA: 50 is ideal. "
            "The best HM and HM_t among unlearning methods are in **bold**.",
        ]
    )


def _cost_table(summaries: dict[str, dict]) -> str:
    """Mean time and peak memory of each method's phases, then its total."""
    rows = []
    for name, summary in summaries.items():
        phases = {**summary.get("phases", {}), "total": {m: summary[m] for m in COST_METRICS if m in summary}}
        for phase, stats in phases.items():
            if stats:
                means = [f"{stats[m]['mean']:.2f}" if m in stats else MISSING for m in COST_METRICS]
                rows.append([name, phase, *means])
    return markdown_table(["Method", "Phase", "time (s)", "peak mem (MB)"], rows, text_columns=2) if rows else ""


def _section(title: str, body: str) -> str:
    """A `##` section, or "" when there is nothing to show."""
    return f"## {title}\n\n{body}" if body else ""


UNDERFIT_BELOW = 90.0


def _underfit_note(original: dict) -> str:
    """A warning when the probe cannot even fit the untouched Original: its forget accuracies mean little."""
    remain = original.get("D_r", {}).get("mean")
    if remain is None or remain >= UNDERFIT_BELOW:
        return ""
    return (
        f"\n\n> Probe underfit: on the Original model this probe reaches only {remain:.2f} % on D_r "
        f"(< {UNDERFIT_BELOW:.0f} %), so low forget accuracies at this lr do not show that knowledge is gone; "
        "raise `eval.kr_epochs` to compare methods here."
    )


def _output_columns(summaries: dict[str, dict], task: str = "class") -> tuple[tuple[str, str], ...]:
    """The output-level columns, plus each diagnostic column that some method reports."""
    if task == "sample":
        return SAMPLE_COLUMNS
    extra = tuple(column for column in DIAGNOSTIC_COLUMNS if any(column[0] in s for s in summaries.values()))
    return OUTPUT_COLUMNS + extra


# plot file-name prefix -> (the question its figures answer, what to look for)
PLOT_GROUPS = {
    "kr": (
        "Does the forgetting survive a linear probe?",
        "Forget accuracy that a new linear head recovers from "
        "the frozen unlearned features, per method and probe lr (lower is better; dashed: chance).",
    ),
    "hm_vs_kr": (
        "Does the forgetting survive a linear probe?",
        "HM at output level against HM under the probe; "
        "a method near the top right forgets for real, one at the bottom right only at the output.",
    ),
    "prototypes": (
        "What did each method do to the class prototypes?",
        "Left: cosine between the original class "
        "means; right: original vs unlearned means. Remain classes should keep a diagonal near 1, the "
        "forget class should lose its own.",
    ),
    "embedding": (
        "Where did the features of the forget class go?",
        "The test features before and after, in one shared 2-D basis "
        "(the PCA axes of the features before, or one t-SNE of both): red points are the forget class.",
    ),
}


def plots_markdown(plots: list[str], rows: list[str]) -> str:
    """The report's plots grouped by the question they answer: a caption per kind, each figure under its method."""
    by_slug = {slug(row): row for row in rows}
    groups: dict[str, list[str]] = {}
    for plot in plots:
        stem = Path(plot).stem
        prefix = next((p for p in PLOT_GROUPS if stem == p or stem.startswith(f"{p}_")), None)
        question, caption = PLOT_GROUPS.get(prefix, ("Other plots", ""))
        items = groups.setdefault(question, [])
        if caption and caption not in items:
            items.append(caption)
        method = by_slug.get(stem[len(prefix) + 1 :]) if prefix else None
        label = f"**{method}**" if method else f"`{Path(plot).name}`"
        items.append(f"{label}\n\n![{method or stem}]({plot})")
    return "\n\n".join(f"### {question}\n\n" + "\n\n".join(items) for question, items in groups.items())


def markdown_report(metrics: dict) -> str:
    """Full report.md text: header, output-level table, one table per KR lr, per-phase cost, MIA definition, plots.

    Tolerates missing optional keys (runs without "kr" or "MIA", no "plots", no "mia_definition").
    """
    methods: dict[str, dict] = metrics.get("methods", {})
    summaries = {name: method_summary(entry) for name, entry in methods.items()}
    single_run = {name: len(entry.get("runs", [])) == 1 for name, entry in methods.items()}

    sections = [
        _header(metrics),
        _section(
            "Output-level results",
            _results_table(summaries, single_run, _output_columns(summaries, metrics.get("task", "class")))
            if summaries
            else "",
        ),
    ]
    for lr in _kr_lrs(metrics, summaries):
        blocks = {name: summary.get("kr", {}).get(lr, {}) for name, summary in summaries.items()}
        if any(blocks.values()):
            table = _results_table(blocks, single_run, KR_COLUMNS) + _underfit_note(blocks.get("Original", {}))
            sections.append(_section(f"KR setting: lr = {lr}", table))
    sections.append(_section("Cost per phase (mean over seeds)", _cost_table(summaries)))
    if metrics.get("mia_definition"):
        sections.append(_section("MIA", f"**MIA definition.** {metrics['mia_definition']}"))
    sections.append(_section("Plots", plots_markdown(metrics.get("plots", []), list(methods))))
    if metrics.get("audit"):  # `unlearn audit` on the same output directory
        sections.append(audit_markdown(metrics["audit"]).replace("# Irreversibility", "## Irreversibility", 1))
    return "\n\n".join(section for section in sections if section) + "\n"


def write_report(metrics: dict, out_dir: str | Path) -> None:
    """Write `metrics.json` (indent 2; non-JSON values such as paths become strings) and `report.md` in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "report.md", markdown_report(metrics))
