"""UCE closed form (Gandikota et al., WACV 2024), the training-free baseline of the paper's Table 2.

    W' = (λW + Σ_i v*_i c_iᵀ + Σ_j W c_j c_jᵀ)(λI + Σ_i c_i c_iᵀ + Σ_j c_j c_jᵀ)⁻¹,   v*_i = W c*_i

c_i: forget concept embeddings, c*_i: the concept each is sent to, c_j: preserved concepts. Every target is W
applied to something, so W' = W M with M = (λI + Σ c*_i c_iᵀ + Σ c_j c_jᵀ)(λI + Σ c_i c_iᵀ + Σ c_j c_jᵀ)⁻¹,
a d_text x d_text matrix absorbed exactly like MoRE's E. Here c_i, c*_i and c_j are the same concept
prototypes MoRE uses (concepts.py), c*_i the prototype of the remap target, so the two methods solve the
same request; the λ ridge term (UCE's `lamb`, default 0.1) keeps the inverse defined when the concepts do
not span d_text, which is also why UCE is a least-squares fit and not exact.
"""

from __future__ import annotations

import torch

from unlearn.errors import UnlearnError


def uce_matrix(forget: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """M = (λI + C* Cᵀ + C_p C_pᵀ)(λI + C Cᵀ + C_p C_pᵀ)⁻¹ from d x |F| forget, d x |F| target, d x |P| preserve."""
    if lam <= 0:
        raise UnlearnError(f"uce_lambda must be > 0 (it keeps the inverse defined), got {lam}.")
    if forget.shape != targets.shape or forget.shape[0] != preserve.shape[0]:
        raise UnlearnError(
            f"UCE needs d x |F| forget and target embeddings and d x |P| preserve embeddings, got "
            f"{tuple(forget.shape)}, {tuple(targets.shape)} and {tuple(preserve.shape)}."
        )
    forget, targets, preserve = forget.double(), targets.double(), preserve.double()
    ridge = lam * torch.eye(len(forget), dtype=torch.float64, device=forget.device)
    kept = preserve @ preserve.T
    numerator = ridge + targets @ forget.T + kept
    denominator = ridge + forget @ forget.T + kept  # symmetric positive definite
    return torch.linalg.solve(denominator, numerator.T).T
