"""Deterministic MoRE routing, the query / membership / block attacks, the query-robust variant and release mode."""

from __future__ import annotations

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.errors import UnlearnError
from unlearn.eval.kr import split_features
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import MoRE
from unlearn.models.split import split_for_probe

FORGET = [0]


@pytest.fixture(scope="module")
def splits(blob_data):
    return split_by_class(blob_data, FORGET)


def test_hash_routing_gives_one_answer_per_input_and_still_forgets(trained_mlp, splits):
    hashed = MoRE(num_experts=8, seed=0, routing="hash").unlearn(trained_mlp, splits)
    base, edit, _ = split_for_probe(hashed)
    values, _ = split_features(base, splits)
    z = values["D_ft"]
    first = edit(z)
    assert torch.equal(first, edit(z))  # evaluating one edit twice gives one answer
    assert torch.allclose(first[3:9], edit(z[3:9]), atol=1e-5)  # ... whatever batch the input comes in
    assert evaluate_splits(hashed, splits)[0]["acc"] == evaluate_splits(hashed, splits)[0]["acc"]
    assert evaluate_splits(hashed, splits)[0]["acc"]["D_ft"] <= 5
    # the experts stay in use: forget samples are spread over several of them
    from unlearn.methods.more import hash_experts

    chosen = hash_experts(values["D_f"], edit.quantum, edit.hash_multipliers, edit.num_experts)
    assert len(chosen.unique()) >= 4
    random_edit = split_for_probe(MoRE(num_experts=8, seed=0).unlearn(trained_mlp, splits))[1]
    assert not torch.equal(random_edit(z), random_edit(z))  # the paper's router: a fresh draw every pass
    with pytest.raises(UnlearnError, match="routing"):
        MoRE(routing="sometimes")
