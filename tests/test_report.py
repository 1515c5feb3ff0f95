"""Report tables (summaries, Markdown, metrics.json) and PNG plots on small synthetic inputs."""

from __future__ import annotations

import json

import pytest
import torch
from matplotlib.figure import Figure

from unlearn.errors import UnlearnError
from unlearn.report.markdown import summarize
from unlearn.report.plots import (
    _embed_2d,
    place_labels,
    plot_embedding,
    plot_hm_kr,
    plot_kr,
    plot_prototype_cosine,
    plot_sweep,
    zoomed_limits,
)
from unlearn.report.tables import markdown_report, plots_markdown, summarize_runs, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KR_LRS = (0.1, 0.01, 0.001)


def make_run(seed: int, d_f: float, hm: float, with_kr: bool = True, mia: float | None = 50.0) -> dict:
    """One run record in the schema the evaluation code writes."""
    run = {
        "seed": seed,
        "acc": {"D_f": d_f, "D_r": 99.0, "D_ft": d_f, "D_rt": 95.0},
        "HM": hm,
        "HM_t": hm - 2.0,
        "cost": {
            "time_s": 0.3 + seed,
            "peak_mem_mb": 12.0,
            "phases": {"prototypes": {"time_s": 0.2, "peak_mem_mb": 10.0}, "svd": {"time_s": 0.1, "peak_mem_mb": 2.0}},
        },
    }
    if mia is not None:
        run["MIA"] = mia
    if with_kr:
        run["kr"] = {
            str(lr): {"acc": {"D_f": 10.0 * i, "D_r": 97.0, "D_ft": 12.0, "D_rt": 90.0}, "HM": hm - i, "HM_t": 80.0 - i}
            for i, lr in enumerate(KR_LRS)
        }
    return run


def make_metrics() -> dict:
    """Original/Retrain with one run, MoRE/ESC with two seeds; ESC has no KR and no MIA."""
    return {
        "dataset": "digits",
        "model": "mlp",
        "forget_classes": [4],
        "seeds": [0, 1],
        "device": "cpu",
        "num_classes": 10,
        "kr_lrs": list(KR_LRS),
        "mia_definition": "Logistic regression on per-sample loss, D_f vs D_t; 50 is ideal.",
        "config": {"method": "more"},
        "plots": ["plots/kr.png", "plots/cosine.png"],
        "methods": {
            "Original": {"runs": [make_run(0, 99.9, 0.2)]},
            "Retrain": {"runs": [make_run(0, 0.0, 99.95)]},
            "MoRE": {"runs": [make_run(0, 0.0, 99.9), make_run(1, 0.0, 99.7)]},
            "ESC": {"runs": [make_run(s, 11.0, 88.8, with_kr=False, mia=None) for s in (0, 1)]},
        },
    }


def test_summarize_is_mean_and_population_std():
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert summarize([5.0]) == {"mean": 5.0, "std": 0.0}
    with pytest.raises(UnlearnError):
        summarize([])


def test_summarize_runs_covers_metrics_kr_and_phases():
    summary = summarize_runs(make_metrics()["methods"]["MoRE"]["runs"])
    assert summary["HM"]["mean"] == pytest.approx(99.8)
    assert summary["HM"]["std"] == pytest.approx(0.1)
    assert summary["time_s"] == {"mean": pytest.approx(0.8), "std": pytest.approx(0.5)}
    assert set(summary) >= {"D_f", "D_r", "D_ft", "D_rt", "HM", "HM_t", "MIA", "time_s", "peak_mem_mb"}
    assert list(summary["kr"]) == ["0.1", "0.01", "0.001"]
    assert summary["kr"]["0.01"]["D_f"] == {"mean": 10.0, "std": 0.0}
    assert summary["phases"]["svd"]["time_s"]["mean"] == pytest.approx(0.1)


def test_summarize_runs_omits_metrics_no_run_has():
    summary = summarize_runs(make_metrics()["methods"]["ESC"]["runs"])
    assert "MIA" not in summary and "kr" not in summary


def test_markdown_report_rows_columns_and_bold_best():
    report = markdown_report(make_metrics())
    assert (
        "| Method | D_f (↓) | D_r (↑) | D_ft (↓) | D_rt (↑) | HM (↑) | HM_t (↑) | MIA | time (s) | peak mem (MB) |"
        in (report)
    )
    assert "- **Seeds:** 0, 1" in report and "- **Forget classes:** 4" in report
    # Single-run reference rows show plain values; multi-seed rows show mean ± std.
    assert "| Original | 99.90 | 99.00 | 99.90 | 95.00 | 0.20 | -1.80 | 50.00 | 0.30 | 12.00 |" in report
    assert "| MoRE | 0.00 ± 0.00 |" in report
    # Best HM among non-reference methods is bold even though Retrain's HM is higher.
    assert "**99.80 ± 0.10**" in report and "**99.95" not in report
    assert "| ESC | 11.00 ± 0.00 | 99.00 ± 0.00 | 11.00 ± 0.00 | 95.00 ± 0.00 | 88.80 ± 0.00 | 86.80 ± 0.00 | – |" in (
        report
    )
    for lr in KR_LRS:
        assert f"## KR setting: lr = {lr}" in report
    assert "| ESC | – | – | – | – | – | – |" in report
    assert "| MoRE | svd | 0.10 | 2.00 |" in report
    assert "**MIA definition.** Logistic regression" in report
    assert "![kr](plots/kr.png)" in report


def test_markdown_report_tolerates_missing_optional_keys():
    report = markdown_report({"methods": {"MoRE": {"runs": [{"seed": 0, "acc": {"D_f": 1.0}}]}}})
    assert "| MoRE | 1.00 | – |" in report
    assert "KR setting" not in report and "MIA definition" not in report
    assert markdown_report({}).startswith("# Unlearning report")


def test_write_report_writes_both_files(tmp_path):
    metrics = make_metrics()
    write_report(metrics, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "out" / "report.md").read_text() == markdown_report(metrics)


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plot_prototype_cosine(tmp_path):
    torch.manual_seed(0)
    before = torch.randn(16, 5)
    after = before.clone()
    after[:, 4] = 0.0  # an erased prototype: cosine 0, not NaN
    path = plot_prototype_cosine(before, after, [4], tmp_path / "plots" / "cosine.png", class_names=list("abcde"))
    assert_png(path)


def test_plot_prototype_cosine_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(UnlearnError, match="same shape"):
        plot_prototype_cosine(torch.randn(8, 4), torch.randn(8, 5), [0], tmp_path / "x.png")


@pytest.mark.parametrize(("method", "count"), [("pca", 300), ("tsne", 60)])
def test_plot_embedding(tmp_path, method, count):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 6
    before = torch.randn(count, 8, generator=generator) + labels[:, None].float()
    after = torch.randn(count, 8, generator=generator)
    path = plot_embedding(before, after, labels, [2], tmp_path / f"{method}.png", method=method, max_points=200)
    assert_png(path)


def test_plot_kr(tmp_path):
    assert_png(plot_kr(make_metrics(), tmp_path / "kr.png"))
    with pytest.raises(UnlearnError, match="kr"):
        plot_kr({"methods": {"ESC": make_metrics()["methods"]["ESC"]}}, tmp_path / "none.png")


def test_plot_hm_kr(tmp_path):
    assert_png(plot_hm_kr(make_metrics(), tmp_path / "hm.png"))
    with pytest.raises(UnlearnError, match="kr"):
        plot_hm_kr({"kr_lrs": [0.1], "methods": {"ESC": make_metrics()["methods"]["ESC"]}}, tmp_path / "none.png")


def test_plot_sweep_over_a_method_parameter(tmp_path):
    metrics = make_metrics()
    metrics["methods"]["MoRE 2"] = metrics["methods"]["MoRE"]
    metrics["config"] = {
        "methods": [
            {"name": "MoRE", "label": None, "params": {"num_experts": 8}},
            {"name": "MoRE", "label": "MoRE 2", "params": {"num_experts": 2}},
            {"name": "ESC", "label": None, "params": {}},
        ]
    }
    assert_png(plot_sweep(metrics, "num_experts", tmp_path / "sweep.png", log_x=True))
    with pytest.raises(UnlearnError, match="target_class"):
        plot_sweep(metrics, "target_class", tmp_path / "none.png")


def test_report_flags_a_probe_that_cannot_fit_the_original():
    run = {"seed": 0, "acc": {"D_f": 100.0, "D_r": 100.0, "D_ft": 99.0, "D_rt": 99.0}, "HM": 0.0, "HM_t": 2.0}
    weak = {"acc": {"D_f": 3.0, "D_r": 27.0, "D_ft": 1.0, "D_rt": 26.0}, "HM": 42.0, "HM_t": 41.0}
    strong = {"acc": {"D_f": 99.0, "D_r": 99.0, "D_ft": 98.0, "D_rt": 98.0}, "HM": 2.0, "HM_t": 4.0}
    metrics = {
        "kr_lrs": [0.1, 0.001],
        "methods": {"Original": {"runs": [{**run, "kr": {"0.1": strong, "0.001": weak}}]}},
    }
    text = markdown_report(metrics)
    assert text.count("Probe underfit") == 1
    assert "reaches only 27.00 % on D_r" in text.split("KR setting: lr = 0.001")[1]


def test_embedding_before_and_after_share_one_pca_basis():
    before = torch.randn(60, 8, dtype=torch.float64).numpy()
    after = before.copy()
    after[:10] += 5.0  # only the first ten points move
    coords_before, coords_after = _embed_2d(before, after, "pca", seed=0)
    assert coords_before[10:] == pytest.approx(coords_after[10:])  # points that did not move stay put
    assert abs(coords_before[:10] - coords_after[:10]).max() > 1.0


def test_kr_plot_is_a_grid_not_a_strip(tmp_path):
    from PIL import Image

    metrics = make_metrics()
    metrics["methods"] = {f"M{i}": make_metrics()["methods"]["MoRE"] for i in range(18)}
    with Image.open(plot_kr(metrics, tmp_path / "kr.png")) as image:
        width, height = image.size
    assert width / height < 2.5


def test_zoomed_limits_follow_the_data_within_bounds():
    low, high = zoomed_limits([97.0, 98.5, 99.0])
    assert 94 < low < 97 and 99 < high <= 103
    assert zoomed_limits([0.0, 100.0]) == (-3.0, 103.0)


def test_placed_labels_do_not_overlap():
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    xs, ys = [50.0, 50.5, 51.0, 51.5, 20.0], [50.0, 50.2, 50.4, 50.6, 80.0]
    ax.plot(xs, ys, "o")
    ax.set(xlim=(0, 100), ylim=(0, 100))
    place_labels(ax, xs, ys, ["0.001", "0.002", "0.003", "0.004", "0.01"], ["C0"] * 5)
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) >= 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_report_plots_are_grouped_by_question_with_the_method_named():
    plots = ["plots/prototypes_more.png", "plots/embedding_more.png", "plots/prototypes_esc.png", "plots/kr.png"]
    text = plots_markdown(plots, ["MoRE", "ESC"])
    assert text.count("### ") == 3  # probe, prototypes, embedding
    assert "**MoRE**" in text and "**ESC**" in text
    assert text.index("### What did each method do to the class prototypes?") < text.index("prototypes_esc.png")
