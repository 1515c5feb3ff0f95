"""Random-sample forgetting (paper Table 4, Alg. 3): the split, SampleRemap, ESC on samples, the gap, the report."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from unlearn.cli import main
from unlearn.data.splits import split_random_samples
from unlearn.errors import UnlearnError
from unlearn.eval.metrics import average_gap, evaluate_splits
from unlearn.methods import ESC, SampleRemap


def test_random_sample_split_is_seeded_disjoint_and_complete(blob_data):
    splits = split_random_samples(blob_data, 0.1, seed=3)
    forget, remain = set(splits.D_f.indices.tolist()), set(splits.D_r.indices.tolist())
    assert len(forget) == 30 and not forget & remain and len(forget | remain) == len(blob_data.train)
    assert splits.forget_classes == [] and len(splits.D_ft) == 0 and len(splits.D_rt) == len(blob_data.test)
    assert torch.equal(split_random_samples(blob_data, 0.1, seed=3).D_f.indices, splits.D_f.indices)
    assert not torch.equal(split_random_samples(blob_data, 0.1, seed=4).D_f.indices, splits.D_f.indices)
    for bad in (0.0, 1.0, 1e-4):
        with pytest.raises(UnlearnError, match="forget_fraction"):
            split_random_samples(blob_data, bad)


def test_sample_remap_is_absorbed_and_keeps_a_generalising_model(trained_mlp, blob_data):
    splits = split_random_samples(blob_data, 0.1, seed=0)
    before = evaluate_splits(trained_mlp, splits)[0]
    assert "D_ft" not in before["acc"] and "HM_t" not in before  # no forget test split in this task
    method = SampleRemap()
    unlearned = method.unlearn(trained_mlp, splits)
    assert not any("edit" in name for name, _ in unlearned.named_modules())  # folded into the head
    after = evaluate_splits(unlearned, splits)[0]["acc"]
    assert after["D_rt"] >= before["acc"]["D_rt"] - 1 and after["D_f"] >= 90
    assert method.linear_matrix().shape == (24, 24)
    with pytest.raises(UnlearnError, match="unlearn\\(model, splits\\)"):
        method.fit(None, None, [])


def test_esc_prunes_the_forget_samples_features_on_a_sample_split(trained_mlp, blob_data):
    splits = split_random_samples(blob_data, 0.1, seed=0)
    method = ESC(k=2)
    method.unlearn(trained_mlp, splits)
    assert method.rank == 2 and method.linear_matrix().shape == (24, 24)


def test_average_gap_is_the_mean_absolute_difference_to_the_reference():
    record = {"acc": {"D_f": 90.0, "D_r": 99.0, "D_rt": 95.0}, "MIA": 55.0}
    reference = {"D_f": 94.0, "D_r": 100.0, "D_rt": 94.0, "MIA": 50.0}
    assert average_gap(record, reference) == pytest.approx((4 + 1 + 1 + 5) / 4)


def test_sample_task_runs_end_to_end_with_the_table_4_report(tmp_path):
    from test_cli import TINY

    run = tmp_path / "run"
    values = {k: v for k, v in TINY.items() if k != "forget_classes"}
    values.update(task="sample", forget_fraction=0.1, seeds=[0], output_dir=str(run), cache_dir=str(tmp_path / "c"))
    values["methods"] = [{"name": "SampleRemap"}, {"name": "NG", "params": {"lr": 1e-3, "epochs": 1}}]
    values["eval"] = {"kr_lrs": [], "plots": False}
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["run", str(config), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "sample" and metrics["split_sizes"]["D_ft"] == 0
    assert all("avg_gap" in entry["summary"] for entry in metrics["methods"].values())
    report = (run / "report.md").read_text()
    assert "Avg. Gap" in report and "| D_t |" in report and "random training samples" in report
    with pytest.raises(UnlearnError, match="task"):
        from unlearn.config import config_from_dict

        config_from_dict({"task": "samples"})
