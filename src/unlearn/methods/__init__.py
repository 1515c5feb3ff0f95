"""Unlearning methods by name: each one file, all with `unlearn(model, splits, head) -> new model`.

Feature edits (MoRE, Remap, Erase, ESC) also offer `fit(features, data, forget_classes)` and `apply(model)`.
"""

from __future__ import annotations

from unlearn.errors import UnlearnError, check_params
from unlearn.methods.base import FeatureEdit, LinearEdit, TrainingUnlearner
from unlearn.methods.esc import ESC
from unlearn.methods.more import Erase, MoRE, MoRELayer, Remap

Method = FeatureEdit | TrainingUnlearner

METHODS: dict[str, type[Method]] = {
    "MoRE": MoRE,
    "Remap": Remap,
    "Erase": Erase,
    "ESC": ESC,
}


def build_method(name: str, **params) -> Method:
    """Instantiate a registered method, with a clear error for an unknown name or parameter."""
    if name not in METHODS:
        raise UnlearnError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    check_params(METHODS[name], params, f"method {name}")
    return METHODS[name](**params)


__all__ = [
    "ESC",
    "METHODS",
    "Erase",
    "FeatureEdit",
    "LinearEdit",
    "Method",
    "MoRE",
    "MoRELayer",
    "Remap",
    "TrainingUnlearner",
    "build_method",
]
