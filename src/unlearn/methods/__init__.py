"""Unlearning methods by name: each one file, all with `unlearn(model, splits, head) -> new model`.

Feature edits (MoRE, Remap, Erase, ESC, ESC-T) also offer `fit(features, data, forget_classes)` (ESC-T also
needs `head=`, the module its mask is trained through) and `apply(model)`; the training baselines (Finetune,
NG, RL, BS, LAU, SCRUB, SalUn, l1-sparse) run the one training loop, Fisher adds Fisher-scaled noise.
"""

from __future__ import annotations

from unlearn.errors import UnlearnError, check_params
from unlearn.methods.base import FeatureEdit, LinearEdit, TrainingUnlearner
from unlearn.methods.bs import BS
from unlearn.methods.esc import ESC
from unlearn.methods.esc_t import ESCT
from unlearn.methods.finetune import Finetune
from unlearn.methods.fisher import Fisher
from unlearn.methods.gated_more import GatedMoRE
from unlearn.methods.l1_sparse import L1Sparse
from unlearn.methods.lau import LAU
from unlearn.methods.more import Erase, MoRE, MoRELayer, Remap
from unlearn.methods.ng import NG
from unlearn.methods.release import Release
from unlearn.methods.rl import RL
from unlearn.methods.router import ConditionalMoRE
from unlearn.methods.salun import SalUn
from unlearn.methods.sample_remap import SampleRemap
from unlearn.methods.scrub import SCRUB
from unlearn.methods.smooth_transplant import SmoothTransplant
from unlearn.methods.transplant import Transplant

Method = FeatureEdit | TrainingUnlearner

METHODS: dict[str, type[Method]] = {
    "MoRE": MoRE,
    "MoRE-G": GatedMoRE,
    "ConditionalMoRE": ConditionalMoRE,
    "Remap": Remap,
    "Erase": Erase,
    "ESC": ESC,
    "SampleRemap": SampleRemap,
    "Finetune": Finetune,
    "NG": NG,
    "RL": RL,
    "BS": BS,
    "LAU": LAU,
    "l1-sparse": L1Sparse,
    "SCRUB": SCRUB,
    "SalUn": SalUn,
    "Fisher": Fisher,
    "ESC-T": ESCT,
    "MoRE-T": Transplant,
    "MoRE-S": SmoothTransplant,
    "Release": Release,
}


def build_method(name: str, **params) -> Method:
    """Instantiate a registered method, with a clear error for an unknown name or parameter."""
    if name not in METHODS:
        raise UnlearnError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    check_params(METHODS[name], params, f"method {name}")
    return METHODS[name](**params)


__all__ = [
    "ConditionalMoRE",
    "BS",
    "ESC",
    "ESCT",
    "LAU",
    "METHODS",
    "NG",
    "RL",
    "SCRUB",
    "Erase",
    "FeatureEdit",
    "Finetune",
    "Fisher",
    "GatedMoRE",
    "L1Sparse",
    "LinearEdit",
    "Method",
    "MoRE",
    "MoRELayer",
    "Release",
    "Remap",
    "SalUn",
    "SampleRemap",
    "SmoothTransplant",
    "TrainingUnlearner",
    "Transplant",
    "build_method",
]
