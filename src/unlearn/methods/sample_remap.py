"""Random-sample forgetting with class prototypes (paper Alg. 3; MORE.md §5).

    P_f = class means of h(x) over D_f,   P_r = class means of h(x) over D_r      (d x k each)
    E = I − P_f P_f⁺ + P_r P_r⁺,   absorbed into the head's first Linear: W' = W E (no extra inference cost)

The forget samples' component in the span of their class means is taken out and replaced by its
projection on the span of the remain class means. For a random forget set the two spans nearly coincide,
so the edit is close to the identity: the model keeps generalising to D_f as a retrained model would.
Choices: pseudo-inverses from the SVD with singular values below rtol·σ_max treated as zero (as MoRE);
classes without forget (or remain) samples are left out of P_f (P_r); `absorb=False` keeps it as a layer.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, LinearEdit
from unlearn.methods.more import pinv_svd
from unlearn.methods.prototypes import collect_prototypes
from unlearn.models.split import split_model


class SampleRemap(FeatureEdit):
    """E = I − P_f P_f⁺ + P_r P_r⁺ from the class means of the forget and the remain samples (Alg. 3)."""

    name = "SampleRemap"

    def __init__(self, rtol: float = 1e-6, absorb: bool = True, batch_size: int = 256, progress: bool = False) -> None:
        super().__init__()
        self.rtol, self.absorb, self.batch_size, self.progress = rtol, absorb, batch_size, progress

    def fit(self, features, data, forget_classes, num_classes=None, exclude=()) -> SampleRemap:
        raise UnlearnError("SampleRemap needs the forget and remain samples apart: call unlearn(model, splits).")

    def unlearn(self, model: nn.Module, splits: ForgetSplits, head: str | None = None) -> nn.Module:
        features, _ = split_model(model, head)
        with self.cost.phase("prototypes"):
            p_f, p_r = (
                collect_prototypes(features, part, [], splits.num_classes, self.batch_size, self.progress).matrix
                for part in (splits.D_f, splits.D_r)
            )
        with self.cost.phase("svd"):
            p_f, p_r = p_f.double(), p_r.double()
            identity = torch.eye(len(p_f), dtype=p_f.dtype, device=p_f.device)
            matrix = identity - p_f @ pinv_svd(p_f, self.rtol)[0] + p_r @ pinv_svd(p_r, self.rtol)[0]
        self.layer = LinearEdit(matrix.float())
        return self.apply(model, head, absorb=self.absorb)
