"""Edits and edited models on disk: safetensors for the tensors, a small JSON manifest for what they mean.

An edit directory holds `edit.safetensors` (the edit layer's state) and `edit.json`:
    {"format": 1, "layer": "MoRELayer" | "ConditionalMoRELayer" | "LinearEdit" | "Sequential", "method": ...,
     "forget_classes": [...], "seed": ..., "prototype_sha256": ..., "feature_dim": d, "num_experts": ...,
     "tensors_sha256": <sha256 of edit.safetensors>}
The prototype hash names the prototype matrix the edit was fit on, so two edits can be told apart (and
traced back to a model and data) without shipping any training data.

Both files are written atomically (`unlearn.io`), the tensors first and the manifest last, and the manifest
records the tensors file's sha256: a reader never sees a half-written file, and a pair torn by a crash
between the two writes (or edited by hand) is refused. `load_edit` checks the manifest against the tensors
(shapes, class ids, index ranges, finite values, the prototype hash) and returns a fitted `SavedEdit`, so
`load_edit(directory).apply(model)` works; any mismatch is an `UnlearnError`.

An edited model is saved as `NAME.safetensors` (its whole state_dict) with `NAME.json` beside it, whose
"edit_layer" entry (the layer type and the head it sits in front of) is what `load_model` needs to rebuild the
structure on a copy of the user's freshly built, unedited model.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.io import atomic_path, atomic_write_json, file_sha256
from unlearn.methods.base import FeatureEdit, LinearEdit, insert_edit
from unlearn.methods.gated_more import GatedMoRELayer
from unlearn.methods.more import ROUTINGS, MoRELayer
from unlearn.methods.router import ConditionalMoRELayer
from unlearn.models.split import EditedHead, find_head, frozen_copy, get_module, independent_copy, with_edit
from unlearn.validate import check_manifest

FORMAT = 1
EDIT_FILE, MANIFEST_FILE = "edit.safetensors", "edit.json"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """Hash of a tensor's float64 values (device and dtype independent)."""
    return hashlib.sha256(tensor.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()


def describe_layer(layer: nn.Module) -> dict:
    """Manifest entries that say what kind of edit `layer` is and how to rebuild it."""
    if type(layer) in (MoRELayer, ConditionalMoRELayer):
        return {
            "layer": type(layer).__name__,
            "feature_dim": layer.feature_dim,
            "num_experts": layer.num_experts,
            "forget_classes": layer.forget_classes,
            "seed": layer.seed,
            "routing": layer.routing,
            "prototype_sha256": tensor_sha256(layer.prototype_rows.T),
        }
    if type(layer) is LinearEdit:
        return {"layer": "LinearEdit", "feature_dim": layer.feature_dim}
    if type(layer) is GatedMoRELayer:
        return {
            "layer": "GatedMoRELayer",
            "feature_dim": layer.feature_dim,
            "remap": describe_layer(layer.remap),
            "gate": "soft" if layer.detector is None else "head",
            "lift": layer.lift,
            "target": layer.target,
            "tau_low": layer.tau_low,
            "tau_high": layer.tau_high,
        }
    if type(layer) is nn.Sequential and len(layer) > 0:  # edits of repeated requests, in order
        parts = [describe_layer(part) for part in layer]
        return {"layer": "Sequential", "feature_dim": parts[0]["feature_dim"], "parts": parts}
    raise UnlearnError(
        f"cannot save an edit layer of type {type(layer).__name__}; saveable: MoRELayer, ConditionalMoRELayer, "
        "GatedMoRELayer, LinearEdit (MoRE, Remap, Erase, ConditionalMoRE, MoRE-G, ESC, ESC-T, SampleRemap)."
    )


def can_save(layer: nn.Module | None) -> bool:
    """Whether `save_edit` can write this edit layer (MoRE-T's layer holds a copy of the head: it cannot)."""
    try:
        return layer is not None and bool(describe_layer(layer))
    except UnlearnError:
        return False


def _tensor(tensors: dict[str, torch.Tensor], name: str, kind: str) -> torch.Tensor:
    if name not in tensors:
        raise UnlearnError(f"the saved {kind} edit lacks the tensor {name!r}; the file is incomplete.")
    tensor = tensors[name]
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise UnlearnError(f"the saved {kind} edit's tensor {name!r} holds NaN or inf values.")
    return tensor


def _class_ids(value) -> list[int] | None:
    """Sorted class ids of a manifest entry, or None when it is not a list of integers."""
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        return None
    return sorted(value)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UnlearnError(f"the edit's manifest and tensors disagree: {message}.")


def _more_layer(entry: dict, tensors: dict[str, torch.Tensor]) -> MoRELayer:
    """A MoRE layer from its tensors, after checking them against each other and against `entry`."""
    kind = entry["layer"]
    rows, coords = _tensor(tensors, "prototype_rows", kind), _tensor(tensors, "coords", kind)
    forget, classes = _tensor(tensors, "forget", kind), _tensor(tensors, "classes", kind)
    targets = tensors.get("targets")
    _check(rows.ndim == 2 and rows.is_floating_point(), f"prototype_rows has shape {tuple(rows.shape)}")
    k, d = rows.shape
    _check(entry.get("feature_dim") == d, f"feature_dim {entry.get('feature_dim')!r} but prototypes are {d}-d")
    _check(not forget.is_floating_point() and forget.ndim == 1 and len(forget) > 0, "forget is not a list of ids")
    _check(coords.shape == (len(forget), d), f"coords {tuple(coords.shape)}, expected {(len(forget), d)}")
    _check(not classes.is_floating_point() and classes.shape == (k,), f"classes {tuple(classes.shape)} for {k} rows")
    _check(bool((classes >= 0).all()) and len(set(classes.tolist())) == k, "class ids are not distinct ids >= 0")
    columns = forget.tolist()
    _check(all(0 <= c < k for c in columns) and len(set(columns)) == len(columns), f"forget columns {columns}")
    if targets is not None:
        _check(not targets.is_floating_point() and targets.ndim == 2, "targets is not an integer matrix")
        _check(targets.shape[1] == len(columns), f"targets {tuple(targets.shape)} for {len(columns)} forget columns")
        flat = targets.flatten().tolist()
        _check(all(0 <= t < k and t not in columns for t in flat), "a remap target is not a remain column")
    num_experts = 1 if targets is None else len(targets)
    saved_experts = entry.get("num_experts")
    _check(saved_experts == num_experts, f"num_experts {saved_experts!r}, the tensors hold {num_experts}")
    forgets, saved_forgets = sorted(classes[forget].tolist()), _class_ids(entry.get("forget_classes"))
    _check(saved_forgets == forgets, f"forget_classes {entry.get('forget_classes')!r}, the tensors forget {forgets}")
    seed = entry.get("seed")
    _check(isinstance(seed, int) and not isinstance(seed, bool), f"seed {seed!r} is not an integer")
    _check(entry.get("prototype_sha256") == tensor_sha256(rows.T), "prototype_sha256 does not match the prototypes")
    routing = entry.get("routing", "random")
    _check(routing in ROUTINGS, f"routing {routing!r} is not one of {ROUTINGS}")
    layer = MoRELayer(rows.T, coords, columns, targets, seed, classes, routing)
    if kind == "ConditionalMoRELayer":
        weight = _tensor(tensors, "router.weight", kind)
        _check(weight.shape == (num_experts, d), f"router.weight {tuple(weight.shape)}, expected {(num_experts, d)}")
        layer = ConditionalMoRELayer(layer, weight)
    return layer


class SavedHead(nn.Module):
    """The place of MoRE-G's gate in a loaded edit: the saved tensors of the head it was fit with, waiting for
    the structure of the model's own head (`attach_head`), since a head can be any module."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.saved = state

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise UnlearnError("this loaded MoRE-G edit has no head yet: insert it with load_edit(directory).apply(model).")


def attach_head(layer: nn.Module, head: nn.Module) -> nn.Module:
    """`layer` with every saved gate (`SavedHead`) rebuilt as a frozen copy of `head` holding the saved weights;
    a head of another shape is an error (the edit was fit on another model)."""
    for module in layer.modules():
        if isinstance(module, GatedMoRELayer) and isinstance(module.detector, SavedHead):
            detector = frozen_copy(head)
            try:
                detector.load_state_dict(module.detector.saved)
            except RuntimeError as error:
                raise UnlearnError(f"the saved MoRE-G gate does not fit this model's head: {error}") from error
            module.detector = detector
    return layer


def _gated_layer(entry: dict, tensors: dict[str, torch.Tensor]) -> GatedMoRELayer:
    remap = entry.get("remap")
    _check(isinstance(remap, dict) and remap.get("layer") == "MoRELayer", "a GatedMoRELayer needs a MoRELayer remap")
    check_manifest(remap, "its remap entry")
    more = _more_layer(remap, {k[6:]: v for k, v in tensors.items() if k.startswith("remap.")})
    gate, target = entry.get("gate"), entry.get("target")
    _check(gate in ("head", "soft") and target in ("expert", "runner-up"), f"gate {gate!r}, target {target!r}")
    lift, low, high = entry.get("lift"), entry.get("tau_low"), entry.get("tau_high")
    _check(isinstance(lift, bool), f"lift {lift!r} is not true or false")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    _check(numbers and low < high, f"tau_low {low!r} and tau_high {high!r}")
    saved = {k[9:]: v for k, v in tensors.items() if k.startswith("detector.")}
    _check((gate == "head") == bool(saved), f"gate {gate!r} with {len(saved)} saved head tensors")
    return GatedMoRELayer(more, SavedHead(saved) if saved else None, low, high, lift, target)


def build_layer(entry: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The edit layer an entry of `describe_layer` describes, from its saved tensors (checked against it).
    A MoRE-G layer's gate comes back as a `SavedHead`: `attach_head` gives it the model's head structure."""
    kind = entry.get("layer") if isinstance(entry, dict) else None
    if kind in ("MoRELayer", "ConditionalMoRELayer"):
        return _more_layer(entry, tensors)
    if kind == "GatedMoRELayer":
        return _gated_layer(entry, tensors)
    if kind == "LinearEdit":
        matrix = _tensor(tensors, "matrix", kind)
        d = entry.get("feature_dim")
        _check(matrix.ndim == 2 and matrix.shape == (d, d), f"matrix {tuple(matrix.shape)} for feature_dim {d!r}")
        return LinearEdit(matrix)
    if kind == "Sequential":
        parts = entry.get("parts")
        _check(isinstance(parts, list) and len(parts) > 0, "a Sequential edit lists no parts")
        layers = []
        for index, part in enumerate(parts):
            prefix = f"{index}."
            layers.append(build_layer(part, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}))
        dims = {getattr(layer, "feature_dim", None) for layer in layers}
        _check(dims == {entry.get("feature_dim")}, f"parts work on {sorted(map(str, dims))}-d features")
        return nn.Sequential(*layers)
    raise UnlearnError(
        f"unknown edit layer type {kind!r} in the manifest; expected MoRELayer, ConditionalMoRELayer, "
        "GatedMoRELayer, LinearEdit or Sequential."
    )


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise UnlearnError(f"manifest {path} does not exist.")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UnlearnError(f"manifest {path} is not UTF-8 text ({error}).") from error
    except json.JSONDecodeError as error:
        raise UnlearnError(f"manifest {path} is not valid JSON ({error}).") from error
    check_manifest(manifest, path)  # a JSON object, each known key of its JSON type and range
    if manifest.get("format") != FORMAT:
        raise UnlearnError(f"manifest {path} has format {manifest.get('format')!r}; this version reads {FORMAT}.")
    return manifest


def _read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; with `sha256`, the file must have exactly that hash."""
    if not path.is_file():
        raise UnlearnError(f"{path} does not exist.")
    if sha256 is not None and file_sha256(path) != sha256:
        raise UnlearnError(
            f"{path} does not match its manifest's tensors_sha256: the pair was torn by an interrupted write "
            "or edited by hand; save the edit again."
        )
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise UnlearnError(f"{path} is not a readable safetensors file ({error}).") from error


def _layer_state(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in layer.state_dict().items()}


def save_edit(edit: FeatureEdit | nn.Module, directory: str | Path, **manifest) -> Path:
    """Write `edit.safetensors` and then `edit.json` (with the tensors' sha256) into `directory`, atomically.

    A fitted method adds its name and forget classes to the manifest; a MoRE layer adds its seed and
    the hash of its prototypes.
    """
    layer = edit
    if isinstance(edit, FeatureEdit):
        if edit.layer is None:
            raise UnlearnError(f"{edit.name} is not fitted yet; fit it before saving.")
        layer = edit.layer
        manifest = {"method": edit.name, "forget_classes": edit.forget_classes, **manifest}
    entries = {"format": FORMAT, **manifest, **describe_layer(layer)}
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UnlearnError(f"cannot save the edit into {directory}: it exists and is not a directory.")
    with atomic_path(directory / EDIT_FILE) as tmp:
        save_file(_layer_state(layer), tmp)
        entries["tensors_sha256"] = file_sha256(tmp)
    atomic_write_json(directory / MANIFEST_FILE, entries)
    return directory


class SavedEdit(FeatureEdit):
    """A fitted edit read back by `load_edit`: `apply(model)` inserts it; `layer` and `manifest` are as saved."""

    def __init__(self, layer: nn.Module, manifest: dict) -> None:
        super().__init__()
        self.layer, self.manifest = layer, manifest
        self.name = str(manifest.get("method", manifest.get("layer", "edit")))
        classes = {c for part in layer.modules() for c in getattr(part, "forget_classes", [])}
        self.forget_classes = sorted(classes) or list(manifest.get("forget_classes") or [])

    def fit(self, features, data, forget_classes, num_classes=None, exclude=()) -> SavedEdit:
        raise UnlearnError("a loaded edit is already fitted: call apply(model), or fit a new method instead.")

    def unlearn(self, model: nn.Module, splits, head: str | None = None) -> nn.Module:
        """The loaded edit inserted into `model` (nothing is fit again)."""
        return self.apply(model, head)

    def apply(
        self, model: nn.Module, head: str | None = None, absorb: bool = False, share_weights: bool = False
    ) -> nn.Module:
        """The loaded edit inserted into a copy of `model`; a MoRE-G gate takes the structure of `model`'s head."""
        layer = attach_head(copy.deepcopy(self.layer), get_module(model, find_head(model, head)))
        return insert_edit(model, layer, head, absorb, share_weights)


def load_edit(directory: str | Path) -> SavedEdit:
    """The fitted edit saved by `save_edit`, its manifest checked against its tensors (`.layer`, `.manifest`)."""
    directory = Path(directory)
    manifest = _read_manifest(directory / MANIFEST_FILE)
    tensors = _read_tensors(directory / EDIT_FILE, manifest.get("tensors_sha256"))
    layer = build_layer(manifest, tensors)
    if "method" in manifest and "forget_classes" in manifest:  # written by save_edit for a fitted method
        layer_classes = sorted({c for part in layer.modules() for c in getattr(part, "forget_classes", [])})
        _check(
            not layer_classes or _class_ids(manifest["forget_classes"]) == layer_classes,
            f"forget_classes {manifest['forget_classes']!r}, the tensors forget {layer_classes}",
        )
    return SavedEdit(layer, manifest)


def save_model(model: nn.Module, path: str | Path, **manifest) -> Path:
    """Write the (possibly edited) model as `path` (.safetensors), then its JSON manifest beside it, atomically."""
    path = Path(path).with_suffix(".safetensors")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    edited = [(name, module) for name, module in model.named_modules() if isinstance(module, EditedHead)]
    entries = {"format": FORMAT, **manifest}
    if edited:
        name, module = edited[0]
        entries["edit_layer"] = {"head": name, **describe_layer(module.edit)}
    with atomic_path(path) as tmp:
        save_file(state, tmp)
        entries["tensors_sha256"] = file_sha256(tmp)
    atomic_write_json(path.with_suffix(".json"), entries)
    return path


def load_model(model: nn.Module, path: str | Path) -> nn.Module:
    """A new model: a copy of `model` (a freshly built instance of the unedited architecture) with the saved
    edit structure rebuilt from the manifest and the saved weights loaded. `model` itself is unchanged."""
    path = Path(path).with_suffix(".safetensors")
    manifest = _read_manifest(path.with_suffix(".json"))
    state = _read_tensors(path, manifest.get("tensors_sha256"))
    edit = manifest.get("edit_layer")
    model = independent_copy(model)
    if edit is not None:
        if not isinstance(edit, dict) or not isinstance(edit.get("head"), str):
            raise UnlearnError(f"{path.with_suffix('.json')}: edit_layer must be an object naming its head.")
        prefix = f"{edit['head']}.edit."
        tensors = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        layer = attach_head(build_layer(edit, tensors), get_module(model, edit["head"]))
        model = with_edit(model, layer, edit["head"], share_weights=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UnlearnError(f"{path} does not fit {type(model).__name__}: {error}") from error
    return model.eval()
