"""Scale-out and dtypes: distributed prototype collection equals one process; bf16 models keep their dtype."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file

from conftest import TinyMLP
from unlearn.cli import main
from unlearn.config import load_config
from unlearn.data.base import LabeledTensors
from unlearn.eval.metrics import accuracy
from unlearn.methods import MoRE
from unlearn.methods.prototypes import class_sums
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_model
from unlearn.runners.vision import Experiment

FIT_CONFIG = {
    "name": "fit",
    "seeds": [0],
    "forget_classes": [4],
    "cache_dir": None,
    "data": {"name": "digits", "params": {"seed": 0}},
    "model": {"name": "digits_cnn", "params": {"width": 8, "feature_dim": 32}},
    "methods": [{"name": "ESC"}, {"name": "MoRE", "params": {"num_experts": 4}}],
}


def test_torchrun_with_two_gloo_processes_fits_the_edit_of_one_process(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({**FIT_CONFIG, "output_dir": str(tmp_path / "run")}))
    checkpoint = tmp_path / "model.pt"
    torch.manual_seed(0)  # an untrained model is enough: the test is about the arithmetic, not the forgetting
    torch.save(Experiment(load_config(config), progress=False).build().state_dict(), checkpoint)
    args = ["fit", str(config), "--method", "MoRE", "--checkpoint", str(checkpoint), "--device", "cpu", "--quiet"]
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "-m", "unlearn", *args, "--output", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout
    one, two = load_file(tmp_path / "one" / "edit.safetensors"), load_file(tmp_path / "two" / "edit.safetensors")
    assert one.keys() == two.keys() and "prototype_rows" in one
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-6, atol=1e-6)
    assert yaml.safe_load((tmp_path / "two" / "edit.json").read_text())["world_size"] == 2


def _rank_sums(rank: int, init_file: str, data: LabeledTensors, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    features = torch.nn.Linear(3, 2)
    sums, counts, _ = class_sums(features, data)
    if rank == 0:
        torch.save((sums, counts), out)
    dist.destroy_process_group()


def test_ranks_that_see_different_classes_still_sum_every_class(tmp_path):
    # strided shards: rank 0 gets labels 0, 1 and rank 1 gets 0, 2 -> their sums have 2 and 3 rows
    data = LabeledTensors(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 0, 1, 2]))
    out = tmp_path / "sums.pt"
    mp.start_processes(_rank_sums, args=(str(tmp_path / "init"), data, str(out)), nprocs=2, start_method="fork")
    torch.manual_seed(0)
    expected = class_sums(torch.nn.Linear(3, 2), data)
    sums, counts = torch.load(out)
    torch.testing.assert_close(sums, expected[0], rtol=1e-6, atol=1e-6)
    assert counts.tolist() == expected[1].tolist() == [2.0, 1.0, 1.0]


def test_fit_names_a_missing_method_and_refuses_training_baselines(tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    bad = {**FIT_CONFIG, "methods": [{"name": "Finetune"}], "output_dir": str(tmp_path / "run")}
    config.write_text(yaml.safe_dump(bad))
    assert main(["fit", str(config), "--output", str(tmp_path / "e"), "--method", "MoRE", "--quiet"]) == 2
    assert "has no method 'MoRE'" in capsys.readouterr().err
    assert main(["fit", str(config), "--output", str(tmp_path / "e"), "--quiet"]) == 2
    assert "not an edit in front of the head" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_is_unlearned_in_its_own_dtype(trained_mlp, blob_data, dtype):
    model = TinyMLP()
    model.load_state_dict(trained_mlp.state_dict())
    model = model.to(dtype)
    features, _ = split_model(model)
    edit = MoRE(num_experts=4, seed=0).fit(features, blob_data.train, forget_classes=[2])
    reference = MoRE(num_experts=4, seed=0).fit(split_model(trained_mlp)[0], blob_data.train, forget_classes=[2])
    # float64 sums of half-precision features: prototypes within the half-precision rounding of float32 ones
    torch.testing.assert_close(edit.prototypes.matrix, reference.prototypes.matrix, rtol=2e-2, atol=2e-2)
    unlearned = edit.apply(model)
    logits, labels = collect_outputs(unlearned, blob_data.test)  # float32 inputs are cast to the model's dtype
    assert unlearned(blob_data.test.x[:4].to(dtype)).dtype == dtype
    forget, remain = labels == 2, labels != 2
    assert accuracy(logits[forget], labels[forget]) < 10
    assert accuracy(logits[remain], labels[remain]) > 95
