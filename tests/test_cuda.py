"""CUDA paths (marked `cuda`; skipped without a GPU): the same edit on the GPU as on the CPU, in fp32 and bf16."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearn.data.splits import split_by_class
from unlearn.eval.metrics import evaluate_splits
from unlearn.methods import ESC, MoRE, Transplant
from unlearn.methods.prototypes import class_sums
from unlearn.models.split import split_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_prototypes_on_cuda_match_the_cpu(blob_data, trained_mlp):
    features, _ = split_model(trained_mlp)
    cpu = class_sums(features, blob_data.train, 5)
    gpu = class_sums(copy.deepcopy(features).cuda(), blob_data.train, 5)
    assert gpu.sums.device.type == "cuda"
    torch.testing.assert_close(gpu.sums.cpu(), cpu.sums, rtol=1e-5, atol=1e-5)
    assert gpu.counts.tolist() == cpu.counts.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", [MoRE(seed=0), MoRE(seed=0, max_per_class=20), ESC(), Transplant(seed=0)])
def test_edits_forget_on_cuda(method, dtype, blob_data, trained_mlp):
    splits = split_by_class(blob_data, [2])
    model = copy.deepcopy(trained_mlp).cuda().to(dtype)
    unlearned = method.unlearn(model, splits)
    assert next(unlearned.parameters()).device.type == "cuda"
    acc = evaluate_splits(unlearned, splits)[0]["acc"]
    assert acc["D_ft"] <= 10 and acc["D_rt"] >= 90
