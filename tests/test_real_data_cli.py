"""Real-data workflow from the command line: idx files, your own model class, fit -> apply -> eval."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from test_idx import write_idx_set
from unlearn.cli import main
from unlearn.config import config_from_dict
from unlearn.data import load_dataset
from unlearn.errors import UnlearnError
from unlearn.models import build_model

MODEL_CLASS = f"{__name__}:UserNet"


class UserNet(nn.Module):
    """A user's own classifier with a head of a non-conventional name (`out`), built from the data's shape."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def test_model_class_key_builds_the_users_class_with_derived_args():
    config = config_from_dict({"model": {"class": MODEL_CLASS, "params": {"hidden": 5}, "head": "out"}})
    assert config.model.name == MODEL_CLASS and config.model.head == "out"
    model = build_model(config.model.name, 4, (1, 6, 6), **config.model.params)
    assert isinstance(model, UserNet) and model.out.in_features == 5 and model.out.out_features == 4


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"class": MODEL_CLASS, "name": "allcnn"}, "both name 'allcnn' and class"),
        ({"class": "UserNet"}, "must be 'package.module:Name'"),
    ],
)
def test_bad_model_class_configs(model, message):
    with pytest.raises(UnlearnError, match=message):
        config_from_dict({"model": model})


def test_bad_model_classes_are_clear_errors():
    with pytest.raises(UnlearnError, match="cannot import 'no_such_module_xyz'"):
        build_model("no_such_module_xyz:Net", 10, (1, 6, 6))
    with pytest.raises(UnlearnError, match="no nn.Module subclass named 'Missing'"):
        build_model(f"{__name__}:Missing", 10, (1, 6, 6))
    with pytest.raises(UnlearnError, match=r"unknown param\(s\) \['depth'\]"):
        build_model(MODEL_CLASS, 10, (1, 6, 6), depth=3)
    with pytest.raises(UnlearnError, match="'in_channels' is set from the data"):
        build_model(MODEL_CLASS, 10, (1, 6, 6), in_channels=3)


@pytest.mark.parametrize("method", [{"name": "MoRE", "params": {"num_experts": 4}}, {"name": "MoRE-G"}])
def test_fit_apply_eval_on_idx_files_with_a_user_model(tmp_path, capsys, method):
    root = tmp_path / "idx"
    root.mkdir()
    write_idx_set(root, n_train=300, n_test=100, size=6)
    data = load_dataset("idx", root=str(root))
    torch.manual_seed(0)
    user_model = UserNet(10, 1, 6, hidden=32)  # trained by the user, outside unlearn
    optimizer = torch.optim.Adam(user_model.parameters(), lr=0.01)
    for _ in range(150):
        loss = nn.functional.cross_entropy(user_model(data.train.x), data.train.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint = tmp_path / "user.pt"
    torch.save(user_model.state_dict(), checkpoint)
    config = tmp_path / "config.yaml"
    settings = {
        "name": "user",
        "device": "cpu",
        "seeds": [0],
        "forget_classes": [3],
        "data": {"name": "idx", "params": {"root": str(root)}},
        "model": {"class": MODEL_CLASS, "params": {"hidden": 32}, "head": "out", "checkpoint": str(checkpoint)},
        "methods": [method],
        "eval": {"kr_lrs": [0.1], "kr_epochs": 2},
    }
    config.write_text(yaml.safe_dump(settings))

    assert main(["fit", str(config), "--output", str(tmp_path / "edit"), "--quiet"]) == 0
    unlearned = tmp_path / "out" / "unlearned"
    args = ["apply", str(config), "--checkpoint", str(checkpoint), "--edit", str(tmp_path / "edit")]
    assert main([*args, "--output", str(unlearned)]) == 0
    assert main(["eval", str(config), "--model", str(checkpoint)]) == 0
    assert main(["eval", str(config), "--model", str(unlearned.with_suffix(".safetensors")), "--kr"]) == 0
    output = capsys.readouterr().out
    assert "D_ft" in output and "KR lr 0.1" in output

    before = json.loads(checkpoint.with_suffix(".eval.json").read_text())
    after = json.loads(unlearned.with_suffix(".eval.json").read_text())
    assert before["acc"]["D_ft"] > 90 and after["acc"]["D_ft"] < 10  # class 3 is forgotten
    assert after["acc"]["D_rt"] > before["acc"]["D_rt"] - 10
    assert after["split_sizes"] == {"D_f": 30, "D_r": 270, "D_ft": 10, "D_rt": 90}
    assert set(after["kr"]["0.1"]["acc"]) == {"D_f", "D_r", "D_ft", "D_rt"} and "kr" not in before
    assert torch.equal(torch.load(checkpoint)["out.weight"], user_model.out.weight)  # the user's file is untouched
