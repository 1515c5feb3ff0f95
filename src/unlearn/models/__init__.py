"""Reference models, the split into features and head, and the one training loop.

`build_model` turns a config name (or your own class, "package.module:Name") and the data's input shape
into a model; everything else (splitting, editing, training) works on any classifier that calls its head
once on its features.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from torch import nn

from unlearn.errors import UnlearnError, accepted_params, check_params
from unlearn.models.allcnn import AllCNN
from unlearn.models.fashion_cnn import FashionCNN
from unlearn.models.resnet import ResNet18
from unlearn.models.small_cnn import DigitsCNN
from unlearn.models.split import EditedHead, find_head, split_model, with_edit
from unlearn.models.train import TrainConfig, train
from unlearn.models.vit import ViT

MODELS: dict[str, type[nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "allcnn": AllCNN,
    "fashion_cnn": FashionCNN,
    "resnet18": ResNet18,
    "vit": ViT,
}

# Arguments that come from the data, never from the user's params.
DERIVED = ("num_classes", "in_channels", "image_size")


def import_model_class(path: str) -> type[nn.Module]:
    """Your own model class from "package.module:Name": importable from PYTHONPATH or the current directory."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise UnlearnError(f"model class {path!r} must be written 'package.module:Name'.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if os.getcwd() in sys.path or error.name != module_name.split(".")[0]:
            raise UnlearnError(f"cannot import {module_name!r} for model class {path!r}: {error}.") from error
        sys.path.append(os.getcwd())  # as `python -m` would: a module in the current directory
        return import_model_class(path)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise UnlearnError(f"{module_name} has no nn.Module subclass named {class_name!r} (model class {path!r}).")
    return cls


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], **params) -> nn.Module:
    """Model `name` for `num_classes` classes and inputs of shape (C, H, W); `params` set the rest.

    `name` is a registered model or your own class "package.module:Name"; your class gets `num_classes`,
    `in_channels` and `image_size` from the data for those of them its __init__ takes, and `params` for the rest.
    """
    for key in params:
        if key in DERIVED:
            raise UnlearnError(f"model param {key!r} is set from the data; remove it from the {name!r} params.")
    if ":" in name:
        cls = import_model_class(name)
        accepted = accepted_params(cls)
        check_params(cls, params, f"model {name!r}", exclude=DERIVED)
        derived = {"num_classes": num_classes}
        if len(input_shape) == 3:
            derived["in_channels"] = input_shape[0]
            if input_shape[1] == input_shape[2]:
                derived["image_size"] = input_shape[1]
        try:
            return cls(**{key: value for key, value in derived.items() if key in accepted}, **params)
        except Exception as error:  # noqa: BLE001 - the user's constructor: any failure is a config error
            raise UnlearnError(f"model class {name!r} failed to build with params {params}: {error!r}") from error
    if name not in MODELS:
        raise UnlearnError(f"unknown model {name!r}; valid names: {sorted(MODELS)} or your own 'package.module:Name'.")
    cls = MODELS[name]
    if len(input_shape) != 3:
        raise UnlearnError(f"model {name!r} needs images of shape (C, H, W), got input_shape {tuple(input_shape)}.")
    check_params(cls, params, f"model {name!r}", exclude=DERIVED)
    channels, height, width = input_shape
    derived = {"num_classes": num_classes, "in_channels": channels}
    if "image_size" in inspect.signature(cls).parameters:
        if height != width:
            raise UnlearnError(f"model {name!r} needs square images, got input_shape {tuple(input_shape)}.")
        derived["image_size"] = height
    return cls(**derived, **params)


__all__ = [
    "MODELS",
    "AllCNN",
    "DigitsCNN",
    "FashionCNN",
    "EditedHead",
    "ResNet18",
    "TrainConfig",
    "ViT",
    "build_model",
    "find_head",
    "split_model",
    "train",
    "with_edit",
]
