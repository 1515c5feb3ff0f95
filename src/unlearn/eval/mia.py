"""Loss-based membership inference (MoRE paper §B.3): can per-sample CE tell D_f from held-out D_t?

Members are D_f (label 1), non-members the test set D_t = D_ft ∪ D_rt (label 0). Both are
subsampled to the same size, split in two balanced halves; a logistic regression on the loss
(as log(loss + 1e-12), scale-free) is fit on one half and its accuracy on the other is the score.
50 means the attacker cannot tell (ideal); higher means membership still leaks.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

MIA_DEFINITION = (
    "MIA: logistic regression on log per-sample cross-entropy, D_f (member) vs the whole test set "
    "D_t = D_ft ∪ D_rt (non-member), class-balanced by subsampling, trained on one half and scored "
    "(accuracy, %) on the disjoint other half; 50 = indistinguishable."
)


def mia_score(member_losses: torch.Tensor, nonmember_losses: torch.Tensor, seed: int = 0) -> float:
    """Attack accuracy in percent on a balanced held-out half (NaN when a side has < 2 samples)."""
    n = min(len(member_losses), len(nonmember_losses))
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    members = rng.permutation(member_losses.double().numpy())[:n]
    nonmembers = rng.permutation(nonmember_losses.double().numpy())[:n]
    half = n // 2
    features = lambda a: np.log(a + 1e-12)[:, None]  # noqa: E731
    x_train = np.concatenate([features(members[:half]), features(nonmembers[:half])])
    y_train = np.concatenate([np.ones(half), np.zeros(half)])
    x_eval = np.concatenate([features(members[half:]), features(nonmembers[half:])])
    y_eval = np.concatenate([np.ones(n - half), np.zeros(n - half)])
    attacker = LogisticRegression().fit(x_train, y_train)
    return 100.0 * float((attacker.predict(x_eval) == y_eval).mean())
