"""Evaluation protocol: HM, MIA, KR (with stochastic routing kept active) and cost phases."""

from __future__ import annotations

import math
import mmap
import time

import pytest
import torch

from unlearn import MoRE, split_model
from unlearn.data.splits import split_by_class
from unlearn.eval.cost import CostMeter
from unlearn.eval.kr import knowledge_retention
from unlearn.eval.metrics import evaluate_splits, harmonic_mean
from unlearn.eval.mia import mia_score


def test_harmonic_mean_matches_the_paper_definition():
    assert harmonic_mean(0.0, 100.0) == 100.0
    assert harmonic_mean(100.0, 100.0) == 0.0
    assert harmonic_mean(100.0, 0.0) == 0.0
    assert math.isclose(harmonic_mean(10.79, 95.96), 2 * 89.21 * 95.96 / (89.21 + 95.96))


def test_mia_is_chance_for_identical_losses_and_high_for_separated_ones():
    gen = torch.Generator().manual_seed(0)
    same = mia_score(torch.rand(400, generator=gen), torch.rand(400, generator=gen), seed=0)
    assert 40 <= same <= 60
    separated = mia_score(torch.rand(400, generator=gen) * 0.01, torch.rand(400, generator=gen) + 1, seed=0)
    assert separated > 95
    assert math.isnan(mia_score(torch.rand(1), torch.rand(100)))


def test_original_forget_accuracy_is_high_and_more_drops_it(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    original, _ = evaluate_splits(trained_mlp, splits)
    assert original["acc"]["D_f"] > 95 and original["HM"] < 10
    edit = MoRE(seed=0).fit(split_model(trained_mlp)[0], blob_data.train, [2])
    unlearned, losses = evaluate_splits(edit.apply(trained_mlp), splits)
    assert unlearned["acc"]["D_f"] == 0 and unlearned["HM"] > 97
    assert set(losses) == {"D_f", "D_r", "D_ft", "D_rt"}


def test_kr_recovers_an_untouched_model_and_reports_every_lr(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    kr = knowledge_retention(trained_mlp, splits, lrs=(0.1, 0.01), epochs=5, seed=0)
    assert set(kr) == {"0.1", "0.01"}
    assert kr["0.1"]["acc"]["D_f"] > 90  # nothing was unlearned: a probe finds the class again
    assert set(kr["0.1"]) == {"acc", "HM", "HM_t"}


def test_kr_probe_sees_the_stochastic_router(blob_data, trained_mlp, monkeypatch):
    splits = split_by_class(blob_data, [2])
    unlearned = MoRE(num_experts=4, seed=0).fit(split_model(trained_mlp)[0], blob_data.train, [2]).apply(trained_mlp)
    layer = unlearned.fc.edit
    calls = []
    original_route = type(layer).route
    monkeypatch.setattr(
        type(layer), "route", lambda self, n, device: calls.append(n) or original_route(self, n, device)
    )
    knowledge_retention(unlearned, splits, lrs=(0.1,), epochs=2, seed=0)
    train_size = len(splits.D_f) + len(splits.D_r)
    assert sum(calls) >= 2 * train_size  # rerouted at every probe epoch, not frozen once


def test_kr_is_repeatable_per_seed(blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    unlearned = MoRE(seed=0).fit(split_model(trained_mlp)[0], blob_data.train, [2]).apply(trained_mlp)
    first = knowledge_retention(unlearned, splits, lrs=(0.1,), epochs=2, seed=5)
    unlearned = MoRE(seed=0).fit(split_model(trained_mlp)[0], blob_data.train, [2]).apply(trained_mlp)
    assert knowledge_retention(unlearned, splits, lrs=(0.1,), epochs=2, seed=5) == first


def test_cost_meter_records_time_and_memory():
    meter = CostMeter()
    with meter.phase("sleep"):
        time.sleep(0.02)
    with meter.phase("allocate"):
        block = mmap.mmap(-1, 64 * 2**20)  # fresh anonymous pages: no allocator can hand back resident memory
        block.write(b"\x01" * len(block))
    summary = meter.summary()
    assert summary["phases"]["sleep"]["time_s"] >= 0.02
    assert summary["phases"]["allocate"]["peak_mem_mb"] > 30
    assert summary["time_s"] == pytest.approx(sum(p["time_s"] for p in summary["phases"].values()))


def test_cost_meter_counts_a_nested_phase_once():
    """Fisher opens "fisher" inside its "unlearn": the total is the outer phase's time, not both."""
    meter = CostMeter()
    with meter.phase("unlearn"):
        with meter.phase("fisher"):
            time.sleep(0.03)
        time.sleep(0.01)
    with meter.phase("eval"):
        time.sleep(0.01)
    summary = meter.summary()
    phases = summary["phases"]
    assert phases["fisher"]["time_s"] >= 0.03 and phases["unlearn"]["time_s"] >= phases["fisher"]["time_s"] + 0.01
    assert summary["time_s"] == pytest.approx(phases["unlearn"]["time_s"] + phases["eval"]["time_s"])
