"""Unlearning for causal language models: GA, GradDiff, NPO, RMU, SRMU, and UOE around any of them.

method = build_lm_method("UOE", inner="NPO", inner_params={"lr": 1e-3, "steps": 50})
unlearned = method.unlearn(model, forget_loader, retain_loader)   # a new model; `model` is untouched
method.report                                                     # losses, parameter fraction, experts
"""

from __future__ import annotations

from unlearn.errors import UnlearnError, check_params
from unlearn.llm.base import LMUnlearner
from unlearn.llm.ga import GA, NPO, GradDiff
from unlearn.llm.rmu import RMU, project_out_misdirection
from unlearn.llm.srmu import SRMU
from unlearn.llm.uoe import INNER_METHODS, UOE

LM_METHODS: dict[str, type] = {**INNER_METHODS, "UOE": UOE}


def build_lm_method(name: str, **params) -> LMUnlearner | UOE:
    """Instantiate a registered LM method, with a clear error for an unknown name or parameter."""
    if name not in LM_METHODS:
        raise UnlearnError(f"unknown LM method {name!r}; choose one of {sorted(LM_METHODS)}.")
    check_params(LM_METHODS[name], params, f"LM method {name}")
    return LM_METHODS[name](**params)


__all__ = [
    "GA",
    "LM_METHODS",
    "LMUnlearner",
    "NPO",
    "RMU",
    "SRMU",
    "UOE",
    "GradDiff",
    "build_lm_method",
    "project_out_misdirection",
]
