"""Edits and edited models on disk: safetensors + JSON manifest, absorption, `unlearn apply`, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from unlearn.cli import main
from unlearn.errors import UnlearnError
from unlearn.methods import GatedMoRE, MoRE, Remap
from unlearn.methods.base import insert_edit
from unlearn.methods.saved import load_edit, load_model, save_edit, save_model
from unlearn.models.split import split_model

FORGET = [1]


def fitted(model, data, method):
    features, _ = split_model(model)
    return method.fit(features, data.train, FORGET)


def test_single_expert_edit_round_trips_and_absorbs_with_identical_logits(trained_mlp, blob_data, tmp_path):
    edit = fitted(trained_mlp, blob_data, Remap(seed=3))
    save_edit(edit, tmp_path / "remap")
    manifest = json.loads((tmp_path / "remap" / "edit.json").read_text())
    assert manifest["method"] == "Remap" and manifest["forget_classes"] == FORGET
    assert manifest["num_experts"] == 1 and len(manifest["prototype_sha256"]) == 64
    loaded = load_edit(tmp_path / "remap")
    layer = loaded.layer
    assert loaded.manifest == manifest and loaded.forget_classes == FORGET
    x = blob_data.test.x
    with torch.no_grad():
        inserted = insert_edit(trained_mlp, layer)(x)
        absorbed_model = insert_edit(trained_mlp, layer, absorb=True)
        absorbed = absorbed_model(x)
        direct = edit.apply(trained_mlp)(x)
    assert torch.allclose(inserted, direct, atol=1e-5) and torch.allclose(absorbed, inserted, atol=1e-5)
    assert not any("edit" in name for name, _ in absorbed_model.named_modules())  # no extra layer at inference
    w = trained_mlp.fc.weight
    assert torch.allclose(absorbed_model.fc.weight, w @ edit.linear_matrix(), atol=1e-6)  # W' = W E
    assert torch.equal(absorbed_model.fc.bias, trained_mlp.fc.bias)  # bias unchanged


def test_stochastic_edit_round_trips_with_its_routing_seed(trained_mlp, blob_data, tmp_path):
    edit = fitted(trained_mlp, blob_data, MoRE(num_experts=4, seed=5))
    save_edit(edit, tmp_path / "more")
    loaded = load_edit(tmp_path / "more")
    layer, manifest = loaded.layer, loaded.manifest
    assert manifest["num_experts"] == 4 and manifest["seed"] == 5
    for name, buffer in edit.layer.named_buffers():
        assert torch.equal(buffer, dict(layer.named_buffers())[name])
    x = blob_data.test.x
    with torch.no_grad():  # both routers start from seed 5, so they draw the same experts
        assert torch.equal(edit.apply(trained_mlp)(x), loaded.apply(trained_mlp)(x))  # apply copies the layer
        assert torch.equal(edit.apply(trained_mlp)(x), insert_edit(trained_mlp, layer)(x))
    with pytest.raises(UnlearnError, match="cannot be absorbed"):
        insert_edit(trained_mlp, layer, absorb=True)


def test_edited_model_saves_and_loads_into_a_fresh_architecture(trained_mlp, blob_data, tmp_path):
    from conftest import TinyMLP

    unlearned = fitted(trained_mlp, blob_data, MoRE(num_experts=4, seed=1)).apply(trained_mlp)
    path = save_model(unlearned, tmp_path / "model", method="MoRE")
    entry = json.loads(path.with_suffix(".json").read_text())["edit_layer"]
    assert entry["layer"] == "MoRELayer" and entry["forget_classes"] == FORGET and entry["seed"] == 1
    assert len(entry["prototype_sha256"]) == 64
    fresh = TinyMLP()
    loaded = load_model(fresh, path)
    assert not any("edit" in name for name, _ in fresh.named_modules())  # the template itself is unchanged
    with torch.no_grad():
        assert torch.equal(loaded(blob_data.test.x), unlearned(blob_data.test.x))
    plain = save_model(trained_mlp, tmp_path / "plain")
    with torch.no_grad():
        assert torch.equal(load_model(TinyMLP(), plain)(blob_data.test.x), trained_mlp(blob_data.test.x))


@pytest.mark.parametrize("target", ["expert", "runner-up"])
def test_gated_edit_round_trips_with_the_heads_gate(trained_mlp, blob_data, tmp_path, target):
    from conftest import TinyMLP

    features, head = split_model(trained_mlp)
    edit = GatedMoRE(num_experts=4, seed=2, target=target).fit(features, blob_data.train, FORGET, head=head)
    save_edit(edit, tmp_path / "gated")
    manifest = json.loads((tmp_path / "gated" / "edit.json").read_text())
    assert manifest["layer"] == "GatedMoRELayer" and manifest["gate"] == "head" and manifest["target"] == target
    loaded = load_edit(tmp_path / "gated")
    x = blob_data.test.x
    with torch.no_grad():
        expected = edit.apply(trained_mlp)(x)
        assert torch.equal(loaded.apply(trained_mlp)(x), expected)
        unlearned = edit.apply(trained_mlp)
        path = save_model(unlearned, tmp_path / "model", method="MoRE-G")
        assert torch.equal(load_model(TinyMLP(), path)(x), unlearned(x))
    assert (expected.argmax(1) != FORGET[0]).all()  # it still forgets after the round trip
    with pytest.raises(UnlearnError, match="has no head yet"), torch.no_grad():
        loaded.layer(features(x))
    other = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    with pytest.raises(UnlearnError, match="does not fit this model's head"):
        loaded.apply(torch.nn.Sequential(torch.nn.Identity(), other), head="1")


def test_bad_files_and_mismatched_sizes_are_clear_errors(trained_mlp, blob_data, tmp_path):
    edit = fitted(trained_mlp, blob_data, Remap())
    directory = save_edit(edit, tmp_path / "e")
    (directory / "edit.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UnlearnError, match="does not match its manifest's tensors_sha256"):
        load_edit(directory)
    manifest = json.loads((directory / "edit.json").read_text())
    del manifest["tensors_sha256"]  # an edit saved before the hash was recorded: the file itself is checked
    (directory / "edit.json").write_text(json.dumps(manifest))
    with pytest.raises(UnlearnError, match="not a readable safetensors"):
        load_edit(directory)
    (directory / "edit.json").write_text("{")
    with pytest.raises(UnlearnError, match="not valid JSON"):
        load_edit(directory)
    (directory / "edit.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UnlearnError, match="format 99"):
        load_edit(directory)
    with pytest.raises(UnlearnError, match="does not exist"):
        load_edit(tmp_path / "missing")
    wrong = torch.nn.Sequential(torch.nn.Linear(16, 10), torch.nn.Linear(10, 5))
    with pytest.raises(UnlearnError, match="24-d features but the head"):
        insert_edit(wrong, edit.layer, head="1")
    with pytest.raises(UnlearnError, match="not fitted"):
        save_edit(Remap(), tmp_path / "unfitted")


def test_run_saves_edits_and_apply_writes_the_unlearned_checkpoint(tmp_path):
    from test_cli import TINY

    run = tmp_path / "run"
    values = {**TINY, "seeds": [0], "output_dir": str(run), "cache_dir": str(tmp_path / "c")}
    values["methods"] = [{"name": "MoRE-T"}, {"name": "Remap"}]  # MoRE-T's edit (it holds the head) is not saveable
    values["eval"] = {"kr_lrs": [], "mia": False}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(values))
    assert main(["run", str(config), "--quiet"]) == 0
    assert (run / "edits" / "remap" / "edit.json").is_file()
    assert sorted(p.name for p in (run / "edits").iterdir()) == ["remap"]  # evaluated, not saved, no crash
    checkpoint = next((tmp_path / "c").glob("original-*.pt"))
    out = tmp_path / "unlearned"
    args = ["apply", str(config), "--checkpoint", str(checkpoint), "--edit", str(run / "edits" / "remap")]
    assert main([*args, "--output", str(out), "--absorb"]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["absorbed"] is True and manifest["edit_manifest"]["method"] == "Remap"
    from unlearn.config import load_config
    from unlearn.data.splits import split_by_class
    from unlearn.eval.metrics import evaluate_splits
    from unlearn.runners.vision import Experiment

    experiment = Experiment(load_config(config), progress=False)
    unlearned = load_model(experiment.build(), out)
    acc = evaluate_splits(unlearned, split_by_class(experiment.data, [4]))[0]["acc"]
    metrics = json.loads((run / "metrics.json").read_text())["methods"]["Remap"]["runs"][0]["acc"]
    assert acc["D_f"] == metrics["D_f"] < 5 and abs(acc["D_rt"] - metrics["D_rt"]) < 1e-9
