"""Edits and edited models on disk: safetensors for the tensors, a small JSON manifest for what they mean.

An edit directory holds `edit.safetensors` (the edit layer's buffers) and `edit.json`:
    {"format": 1, "layer": "MoRELayer" | "LinearEdit", "method": ..., "forget_classes": [...], "seed": ...,
     "prototype_sha256": ..., "feature_dim": d, "num_experts": ...}
The prototype hash names the prototype matrix the edit was fit on, so two edits can be told apart (and
traced back to a model and data) without shipping any training data.

An edited model is saved as `NAME.safetensors` (its whole state_dict) with `NAME.json` beside it, whose
"edit_layer" entry (the layer type and the head it sits in front of) is what `load_model` needs to rebuild the
structure on top of the user's freshly built, unedited model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, LinearEdit
from unlearn.methods.more import MoRELayer
from unlearn.models.split import EditedHead, with_edit

FORMAT = 1
EDIT_FILE, MANIFEST_FILE = "edit.safetensors", "edit.json"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """Hash of a tensor's float64 values (device and dtype independent)."""
    return hashlib.sha256(tensor.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()


def describe_layer(layer: nn.Module) -> dict:
    """Manifest entries that say what kind of edit `layer` is and how to rebuild it."""
    if isinstance(layer, MoRELayer):
        return {
            "layer": "MoRELayer",
            "feature_dim": layer.feature_dim,
            "num_experts": layer.num_experts,
            "forget_classes": layer.forget_classes,
            "seed": layer.seed,
            "routing": layer.routing,
            "prototype_sha256": tensor_sha256(layer.prototype_rows.T),
        }
    if isinstance(layer, LinearEdit):
        return {"layer": "LinearEdit", "feature_dim": layer.feature_dim}
    if isinstance(layer, nn.Sequential) and len(layer) > 0:  # edits of repeated requests, in order
        parts = [describe_layer(part) for part in layer]
        return {"layer": "Sequential", "feature_dim": parts[0]["feature_dim"], "parts": parts}
    raise UnlearnError(f"cannot save an edit layer of type {type(layer).__name__}; use MoRELayer or LinearEdit.")


def build_layer(entry: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The edit layer an entry of `describe_layer` describes, from its saved buffers."""
    kind = entry.get("layer")
    try:
        if kind == "MoRELayer":
            rows, coords, forget = tensors["prototype_rows"], tensors["coords"], tensors["forget"].tolist()
            return MoRELayer(
                rows.T,
                coords,
                forget,
                tensors.get("targets"),
                entry.get("seed", 0),
                tensors["classes"],
                entry.get("routing", "random"),
            )
        if kind == "LinearEdit":
            return LinearEdit(tensors["matrix"])
    except KeyError as error:
        raise UnlearnError(f"the saved {kind} edit lacks the tensor {error}; the file is incomplete.") from error
    if kind == "Sequential":
        parts = []
        for index, part in enumerate(entry["parts"]):
            prefix = f"{index}."
            parts.append(build_layer(part, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}))
        return nn.Sequential(*parts)
    raise UnlearnError(f"unknown edit layer type {kind!r} in the manifest; expected MoRELayer or LinearEdit.")


def _read_manifest(path: Path) -> dict:
    if not path.is_file():
        raise UnlearnError(f"manifest {path} does not exist.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UnlearnError(f"manifest {path} is not valid JSON ({error}).") from error
    if manifest.get("format") != FORMAT:
        raise UnlearnError(f"manifest {path} has format {manifest.get('format')!r}; this version reads {FORMAT}.")
    return manifest


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UnlearnError(f"{path} does not exist.")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise UnlearnError(f"{path} is not a readable safetensors file ({error}).") from error


def save_edit(edit: FeatureEdit | nn.Module, directory: str | Path, **manifest) -> Path:
    """Write `edit.safetensors` and `edit.json` for a fitted method (or a bare edit layer) into `directory`.

    A fitted method adds its name and forget classes to the manifest; a MoRE layer adds its seed and
    the hash of its prototypes.
    """
    layer = edit
    if isinstance(edit, FeatureEdit):
        if edit.layer is None:
            raise UnlearnError(f"{edit.name} is not fitted yet; fit it before saving.")
        layer = edit.layer
        manifest = {"method": edit.name, "forget_classes": edit.forget_classes, **manifest}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: b.detach().cpu().contiguous() for name, b in layer.named_buffers()}, directory / EDIT_FILE)
    entries = {"format": FORMAT, **manifest, **describe_layer(layer)}
    (directory / MANIFEST_FILE).write_text(json.dumps(entries, indent=2) + "\n")
    return directory


def load_edit(directory: str | Path) -> tuple[nn.Module, dict]:
    """The edit layer saved by `save_edit` and its manifest."""
    directory = Path(directory)
    manifest = _read_manifest(directory / MANIFEST_FILE)
    layer = build_layer(manifest, _read_tensors(directory / EDIT_FILE))
    return layer, manifest


def save_model(model: nn.Module, path: str | Path, **manifest) -> Path:
    """Write the (possibly edited) model as `path` (.safetensors) with a JSON manifest beside it."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, path)
    edited = [(name, module) for name, module in model.named_modules() if isinstance(module, EditedHead)]
    entries = {"format": FORMAT, **manifest}
    if edited:
        name, module = edited[0]
        entries["edit_layer"] = {"head": name, **describe_layer(module.edit)}
    path.with_suffix(".json").write_text(json.dumps(entries, indent=2) + "\n")
    return path


def load_model(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a model written by `save_model` into `model`, a freshly built instance of the unedited architecture.

    The edit structure is rebuilt from the manifest; the returned model is a new module (`model` is unchanged).
    """
    path = Path(path).with_suffix(".safetensors")
    manifest = _read_manifest(path.with_suffix(".json"))
    state = _read_tensors(path)
    edit = manifest.get("edit_layer")
    if edit is not None:
        prefix = f"{edit['head']}.edit."
        tensors = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        model = with_edit(model, build_layer(edit, tensors), edit["head"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UnlearnError(f"{path} does not fit {type(model).__name__}: {error}") from error
    return model.eval()
