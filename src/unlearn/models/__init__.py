"""Reference models, the split into features and head, and the one training loop.

`build_model` turns a config name and the data's input shape into a model; everything else
(splitting, editing, training) works on any classifier that calls its head once on its features.
"""

from __future__ import annotations

import inspect

from torch import nn

from unlearn.errors import UnlearnError, check_params
from unlearn.models.allcnn import AllCNN
from unlearn.models.resnet import ResNet18
from unlearn.models.small_cnn import DigitsCNN
from unlearn.models.split import EditedHead, find_head, split_model, with_edit
from unlearn.models.train import TrainConfig, train
from unlearn.models.vit import ViT

MODELS: dict[str, type[nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "allcnn": AllCNN,
    "resnet18": ResNet18,
    "vit": ViT,
}

# Arguments that come from the data, never from the user's params.
DERIVED = ("num_classes", "in_channels", "image_size")


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], **params) -> nn.Module:
    """Model `name` for `num_classes` classes and inputs of shape (C, H, W); `params` set the rest."""
    if name not in MODELS:
        raise UnlearnError(f"unknown model {name!r}; valid names: {sorted(MODELS)}.")
    cls = MODELS[name]
    if len(input_shape) != 3:
        raise UnlearnError(f"model {name!r} needs images of shape (C, H, W), got input_shape {tuple(input_shape)}.")
    for key in params:
        if key in DERIVED:
            raise UnlearnError(f"model param {key!r} is set from the data; remove it from the {name!r} params.")
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
