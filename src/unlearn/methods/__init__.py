"""Unlearning methods by name: each one file, all with `fit(features, data, forget_classes)` and `apply(model)`."""

from __future__ import annotations

import inspect

from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, LinearEdit
from unlearn.methods.esc import ESC
from unlearn.methods.more import Erase, MoRE, MoRELayer, Remap

METHODS: dict[str, type[FeatureEdit]] = {"MoRE": MoRE, "Remap": Remap, "Erase": Erase, "ESC": ESC}


def build_method(name: str, **params) -> FeatureEdit:
    """Instantiate a registered method, with a clear error for an unknown name or parameter."""
    if name not in METHODS:
        raise UnlearnError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    cls = METHODS[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnlearnError(f"method {name} has no parameter(s) {unknown}; valid: {valid}.")
    return cls(**params)


__all__ = ["ESC", "METHODS", "Erase", "FeatureEdit", "LinearEdit", "MoRE", "MoRELayer", "Remap", "build_method"]
