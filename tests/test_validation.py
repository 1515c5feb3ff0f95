"""Boundary checks that the corpus does not pin down on its own: the shipped configs still load, a method
error stops a run before any training, head detection, and the outlier warning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from unlearn.cli import main
from unlearn.config import load_config
from unlearn.errors import UnlearnError
from unlearn.methods import MoRE
from unlearn.models.split import find_head
from unlearn.runners.diffusion import load_diffusion_config
from unlearn.runners.llm import load_llm_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_strict_checks(path):
    (load_llm_config if path.name.startswith("llm") else load_config)(path)


def test_the_diffusion_example_config_passes_the_strict_checks():
    load_diffusion_config(CONFIGS / "diffusion" / "tiny.yaml")


def test_a_bad_method_stops_the_run_before_anything_trains(tmp_path, monkeypatch, capsys):
    import unlearn.runners.vision as vision

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the config was checked")

    monkeypatch.setattr(vision, "train_cached", no_training)
    config = {"output_dir": str(tmp_path / "out"), "cache_dir": None, "methods": [{"name": "MoRE"}, {"name": "Moar"}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "unknown method 'Moar'" in capsys.readouterr().err


class HeadFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(8, 3)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())

    def forward(self, x):
        return self.out(self.body(x))


def test_head_detection_refuses_a_head_registered_first_and_names_head_param():
    with pytest.raises(UnlearnError, match="head='<submodule name>'"):
        find_head(HeadFirst())
    assert find_head(HeadFirst(), "out") == "out"
    assert find_head(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))) == "2"


def test_one_input_far_outside_the_training_range_warns(blob_data, trained_mlp):
    from unlearn.data.base import LabeledTensors
    from unlearn.models.split import split_model

    features, _ = split_model(trained_mlp)
    x, y = blob_data.train.x.clone(), blob_data.train.targets
    MoRE(num_experts=2).fit(features, LabeledTensors(x, y), [1], 5)  # clean data: no warning expected below
    x[3] = 1e6
    with pytest.warns(UserWarning, match="far outside the training range"):
        MoRE(num_experts=2).fit(features, LabeledTensors(x, y), [1], 5)


def test_integer_labels_of_any_width_are_accepted(blob_data, trained_mlp):
    from unlearn.models.split import split_model

    features, _ = split_model(trained_mlp)
    x, y = blob_data.train.x, blob_data.train.targets
    loader = torch.utils.data.DataLoader(list(zip(x, y.to(torch.int32), strict=True)), batch_size=32)
    edit = MoRE(num_experts=2, seed=0).fit(features, loader, [1], 5)
    reference = MoRE(num_experts=2, seed=0).fit(features, blob_data.train, [1], 5)
    assert torch.equal(edit.layer.prototype_rows, reference.layer.prototype_rows)
