"""The model contract (docs/contract.md): the input model is left exactly as it was, the output is independent.

Each test here failed before the contract was enforced: a BatchNorm kept in eval inside a training model,
an MC-dropout layer, a hook on the model root, `out.train()` reaching the input, `load_model` writing into
the template. The helpers `snapshot` / `assert_unchanged` / `mutate` are shared with test_conformance.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import DIM, NUM_CLASSES, TinyMLP
from unlearn import UnlearnError, load_edit, load_model, save_edit, save_model
from unlearn.data.splits import split_by_class
from unlearn.methods import ESC, ESCT, ConditionalMoRE, MoRE, Remap, Transplant
from unlearn.methods.saved import EDIT_FILE, MANIFEST_FILE, file_sha256
from unlearn.models.split import split_model

FORGET = [1]


def hook_keys(module: nn.Module) -> dict[str, list]:
    """The hook ids of every hook dict of a module (forward, pre, backward, state-dict...)."""
    return {key: list(value) for key, value in vars(module).items() if "hooks" in key and isinstance(value, dict)}


def snapshot(model: nn.Module) -> dict:
    """Everything the contract protects: state bit for bit, requires_grad, grads, every flag, every hook dict."""
    return {
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "flags": {name: module.training for name, module in model.named_modules()},
        "hooks": {name: hook_keys(module) for name, module in model.named_modules()},
        "modules": [(name, type(module).__name__) for name, module in model.named_modules()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"], "the input's module structure changed"
    assert after["flags"] == before["flags"], "a train/eval flag of the input changed"
    assert after["hooks"] == before["hooks"], "the input's hooks changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad of the input changed"
    assert after["state"].keys() == before["state"].keys()
    for name, tensor in before["state"].items():
        assert torch.equal(after["state"][name], tensor), f"{name} of the input changed"
    for name, grad in before["grads"].items():
        now = after["grads"][name]
        assert (grad is None) == (now is None) and (grad is None or torch.equal(grad, now)), f"{name}.grad changed"


def mutate(model: nn.Module) -> None:
    """Everything a user may do to the returned model: flags, hooks, requires_grad, in-place weight updates."""
    model.train()
    for module in model.modules():
        module.register_forward_hook(lambda *_: None)
        module.register_forward_pre_hook(lambda *_: None)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(1.0)
    model.requires_grad_(False)


def shares_storage(a: nn.Module, b: nn.Module) -> bool:
    pointers = {t.data_ptr() for t in [*a.parameters(), *a.buffers()] if t.numel()}
    return any(t.data_ptr() in pointers for t in [*b.parameters(), *b.buffers()] if t.numel())


class NormNet(nn.Module):
    """TinyMLP's shape with a BatchNorm and a dropout in the body: the modules whose flags matter."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.3))
        self.fc = nn.Linear(24, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture
def norm_net(blob_data) -> NormNet:
    torch.manual_seed(0)
    model = NormNet()
    with torch.no_grad():  # running statistics that mean something
        model.train()(blob_data.train.x)
    return model


@pytest.fixture(scope="module")
def splits(blob_data):
    return split_by_class(blob_data, FORGET)


def fit_methods():
    """Feature edits whose `fit` runs the features (each once), ESC-T and ConditionalMoRE through the head."""
    return [MoRE(num_experts=2), Remap(), ESC(), ESCT(epochs=1), ConditionalMoRE(num_experts=2, epochs=1, lr=1e-3)]


@pytest.mark.parametrize("flags", ["bn-eval-in-train", "mc-dropout-in-eval"])
@pytest.mark.parametrize("method", fit_methods(), ids=lambda m: m.name)
def test_unlearn_keeps_every_submodule_flag(norm_net, splits, flags, method):
    if flags == "bn-eval-in-train":  # a BatchNorm frozen on purpose inside a training model
        norm_net.train()
        norm_net.body[1].eval()
    else:  # MC-dropout: an evaluating model with its dropout left on
        norm_net.eval()
        norm_net.body[3].train()
    before = snapshot(norm_net)
    method.unlearn(norm_net, splits)
    assert_unchanged(norm_net, before)


def test_fit_on_split_features_keeps_flags_and_never_fires_root_hooks(norm_net, blob_data):
    norm_net.train()
    norm_net.body[1].eval()
    seen: list[tuple[str, int]] = []
    norm_net.register_forward_hook(lambda _m, _i, out: seen.append(("root", out.shape[-1])))
    norm_net.body.register_forward_hook(lambda _m, _i, out: seen.append(("body", out.shape[-1])))
    before = snapshot(norm_net)
    features, _ = split_model(norm_net)
    MoRE(num_experts=2).fit(features, blob_data.train, FORGET)
    assert_unchanged(norm_net, before)
    assert ("root", 24) not in seen  # the root's hook never sees features in place of logits
    assert ("body", 24) in seen  # a hook inside the features sees the body's own output, as ever
    features.register_forward_hook(lambda *_: None)
    assert_unchanged(norm_net, before)  # a hook on the split copy does not reach the model


def test_head_hooks_never_see_masked_or_routed_features(trained_mlp, splits):
    calls = []
    handle = trained_mlp.fc.register_forward_hook(lambda *_: calls.append(1))
    try:
        ESCT(epochs=2, lr=1e6).unlearn(trained_mlp, splits)
        ConditionalMoRE(num_experts=2, epochs=1, lr=1e-3).unlearn(trained_mlp, splits)
        Transplant().unlearn(trained_mlp, splits)
    finally:
        handle.remove()
    assert calls == []  # the head they train through (or detect with) is a hookless frozen copy


def test_returned_model_is_independent_of_the_input(trained_mlp, splits):
    before = snapshot(trained_mlp)
    out = MoRE(num_experts=2).unlearn(trained_mlp, splits)
    assert not shares_storage(out, trained_mlp)
    mutate(out)
    out.fc.head.weight.grad = torch.ones_like(out.fc.head.weight)
    assert_unchanged(trained_mlp, before)


def test_absorbed_and_inner_edits_are_independent_too(trained_mlp, splits):
    before = snapshot(trained_mlp)
    edit = Remap().fit(split_model(trained_mlp)[0], splits.train(), FORGET)
    absorbed = edit.apply(trained_mlp, absorb=True)
    inner = MoRE(num_experts=2, module="body.2").unlearn(trained_mlp, splits)
    for out in (absorbed, inner):
        assert not shares_storage(out, trained_mlp)
        mutate(out)
    assert_unchanged(trained_mlp, before)


def test_share_weights_is_an_explicit_opt_in(trained_mlp, splits):
    edit = Remap().fit(split_model(trained_mlp)[0], splits.train(), FORGET)
    shared = edit.apply(trained_mlp, share_weights=True)
    assert shares_storage(shared, trained_mlp)  # the memory-saving mode reuses the weights...
    before = snapshot(trained_mlp)
    shared.register_forward_hook(lambda *_: None)  # ...but the copied root has its own hook dict
    assert_unchanged(trained_mlp, before)
    x = splits.D_ft.dataset.x[:8]
    with torch.no_grad():
        assert torch.equal(shared(x), edit.apply(trained_mlp)(x))


def test_load_model_returns_a_new_model_and_leaves_the_template(trained_mlp, splits, tmp_path):
    unlearned = MoRE(num_experts=2).unlearn(trained_mlp, splits)
    path = save_model(unlearned, tmp_path / "model")
    fresh = TinyMLP()
    before = snapshot(fresh)
    loaded = load_model(fresh, path)
    assert_unchanged(fresh, before)
    assert loaded is not fresh and not shares_storage(loaded, fresh)
    plain = save_model(trained_mlp, tmp_path / "plain")  # no edit: the weights still go into a copy
    loaded = load_model(fresh, plain)
    assert_unchanged(fresh, before)
    assert torch.equal(loaded.fc.weight, trained_mlp.fc.weight)


# --- edits on disk: atomic pair, checked against the manifest on load ---------------------------------


@pytest.fixture
def saved_more(trained_mlp, splits, tmp_path):
    edit = MoRE(num_experts=3, seed=2).fit(split_model(trained_mlp)[0], splits.train(), FORGET)
    return save_edit(edit, tmp_path / "edit")


def rewrite(directory, manifest_change=None, tensor_change=None):
    """Edit the manifest and/or tensors and re-sign the tensors' hash, as a careful forger would."""
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    if tensor_change is not None:
        tensors = load_file(directory / EDIT_FILE)
        tensor_change(tensors)
        save_file(tensors, directory / EDIT_FILE)
        manifest["tensors_sha256"] = file_sha256(directory / EDIT_FILE)
    if manifest_change is not None:
        manifest_change(manifest)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_load_edit_returns_a_fitted_edit(saved_more, trained_mlp, splits):
    edit = load_edit(saved_more)
    assert edit.forget_classes == FORGET and edit.manifest["num_experts"] == 3
    before = snapshot(trained_mlp)
    out = edit.apply(trained_mlp)
    assert_unchanged(trained_mlp, before)
    with torch.no_grad():
        assert out(splits.D_ft.dataset.x).argmax(1).ne(1).float().mean() > 0.9
    with pytest.raises(UnlearnError, match="already fitted"):
        edit.fit(split_model(trained_mlp)[0], splits.train(), FORGET)


@pytest.mark.parametrize(
    ("manifest_change", "tensor_change", "match"),
    [
        (lambda m: m.update(forget_classes=[2]), None, "forget_classes"),
        (lambda m: m.update(seed="abc"), None, "seed"),
        (lambda m: m.update(num_experts=5), None, "num_experts"),
        (lambda m: m.update(feature_dim=7), None, "feature_dim"),
        (None, lambda t: t["prototype_rows"].mul_(1.01), "prototype_sha256"),
        (None, lambda t: t["prototype_rows"].__setitem__((0, 0), float("nan")), "NaN"),
        (None, lambda t: t["targets"].fill_(99), "remap target"),
        (None, lambda t: t["forget"].fill_(-1), "forget columns"),
        (None, lambda t: t.__setitem__("coords", t["coords"][:, :3].contiguous()), "coords"),
        (None, lambda t: t.pop("classes"), "lacks the tensor"),
    ],
)
def test_load_edit_refuses_a_manifest_at_odds_with_its_tensors(saved_more, manifest_change, tensor_change, match):
    rewrite(saved_more, manifest_change, tensor_change)
    with pytest.raises(UnlearnError, match=match):
        load_edit(saved_more)


def test_load_edit_refuses_a_torn_pair_and_odd_manifests(saved_more, trained_mlp, splits):
    other = Remap().fit(split_model(trained_mlp)[0], splits.train(), FORGET)
    save_file({"matrix": other.linear_matrix().contiguous()}, saved_more / EDIT_FILE)  # new tensors, old manifest
    with pytest.raises(UnlearnError, match="tensors_sha256"):
        load_edit(saved_more)
    (saved_more / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(UnlearnError, match="JSON object"):
        load_edit(saved_more)
    (saved_more / MANIFEST_FILE).write_bytes(b"\xff\xfe{")
    with pytest.raises(UnlearnError, match="UTF-8"):
        load_edit(saved_more)


def test_an_interrupted_save_leaves_the_previous_edit_whole(saved_more, trained_mlp, splits, monkeypatch):
    import unlearn.methods.saved as saved

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt

    before = {name: (saved_more / name).read_bytes() for name in (EDIT_FILE, MANIFEST_FILE)}
    monkeypatch.setattr(saved, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_edit(Remap().fit(split_model(trained_mlp)[0], splits.train(), FORGET), saved_more)
    monkeypatch.undo()
    assert {name: (saved_more / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in saved_more.iterdir()) == sorted(before)  # no temp file left behind
    assert load_edit(saved_more).manifest["num_experts"] == 3


def test_conditional_more_round_trips_with_its_router(trained_mlp, splits, tmp_path):
    method = ConditionalMoRE(num_experts=3, epochs=1, lr=1e-3)
    out = method.unlearn(trained_mlp, splits)
    loaded = load_edit(save_edit(method, tmp_path / "router"))
    assert loaded.manifest["layer"] == "ConditionalMoRELayer"
    x = splits.D_rt.dataset.x
    with torch.no_grad():
        assert torch.equal(loaded.apply(trained_mlp)(x), out(x))  # top-1 routing: deterministic


def test_a_layer_that_cannot_be_saved_is_a_clear_error(trained_mlp, splits, tmp_path):
    method = Transplant()
    method.unlearn(trained_mlp, splits)
    with pytest.raises(UnlearnError, match="cannot save an edit layer of type TransplantLayer"):
        save_edit(method, tmp_path / "t")


def test_cells_are_tied_to_the_weights_of_the_original(tmp_path, trained_mlp):
    from unlearn.runners.vision import CellStore

    store, spec = CellStore(tmp_path, {"data": "blobs"}, resume=True), {"method": "MoRE", "params": {}}
    store.pin(trained_mlp)
    store.put("MoRE", spec, 0, {"record": {"D_f": 1.0}})
    assert store.get("MoRE", spec, 0) == {"fingerprint": store._fingerprint(spec, 0), "record": {"D_f": 1.0}}
    other = copy.deepcopy(trained_mlp)  # e.g. retrained elsewhere, or another checkpoint at the same path
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6
    store.pin(other)
    assert store.get("MoRE", spec, 0) is None  # recomputed, never mixed with cells of another Original
    store.pin(copy.deepcopy(trained_mlp))
    assert store.get("MoRE", spec, 0) is not None


def test_atomic_dir_swaps_a_whole_directory_in(tmp_path):
    from unlearn.io import atomic_dir

    target = tmp_path / "unet"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["unet"]  # no temp or old directory left behind
