"""MoRE-S: a transplant that is smooth where MoRE-T jumps and deterministic where MoRE is random.

    g(z)   = Σ_{c ∈ F} softmax(head(z) / T)_c                     soft forget detector (the model's own head)
    w_i(z) = softmax_i(−|z − c_i|² / (2 h²))                       soft assignment to forget centres c_i
    T(z)   = z + Σ_i w_i(z) (b_π(i) − c_i)                         translate each centre's cell onto a remain sample
    ẑ      = E [ z + g(z) (T(z) − z) ]⁺,  E = I − P_f D_f           erased like every remain output (MoRE eq. 5)

c_i are the forget training features, b_π(i) a remain training feature drawn for each (seeded), h a fraction
(`bandwidth`) of the median distance between a centre and its nearest other centre, [·]⁺ a ReLU when the
features are non-negative (ReLU features stay so). Every piece is a smooth function of z, so nearby inputs get
nearby answers and one input always the same answer.

Why: MoRE-T's hard detector and hashed bank entry make an input's answer jump under small perturbations, which
jitter, finite-difference and path attacks read; MoRE's random expert answers differently to repeated queries.
Here a forget feature near centre c_i lands at b_π(i) + (z − c_i): a remain sample's feature moved by the
forget sample's own offset from its centre, so forget outputs move with their input at the network's own
rate, like remain outputs. Where it falls short is measured in `bench/audit.py` (docs/audit.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit
from unlearn.methods.budget import Budget, collect_budgeted
from unlearn.methods.more import forget_coordinates
from unlearn.methods.prototypes import prototypes_from_sums
from unlearn.methods.transplant import nearest_others
from unlearn.models.split import frozen_copy
from unlearn.runtime import module_device


class SmoothTransplantLayer(nn.Module):
    """ẑ = E[z + g(z) Σ_i w_i(z) (b_π(i) − c_i)]⁺ (see the module docstring); deterministic and smooth."""

    def __init__(
        self,
        forget_rows: torch.Tensor,
        coords: torch.Tensor,
        centres: torch.Tensor,
        offsets: torch.Tensor,
        bandwidth: float,
        detector: nn.Module,
        forget_classes: list[int],
        temperature: float,
        nonnegative: bool,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("forget_rows", forget_rows.float())  # |F| x d: P_f
        self.register_buffer("coords", coords.float())  # |F| x d: D_f
        self.register_buffer("centres", centres.float())  # N_c x d
        self.register_buffer("offsets", offsets.float())  # N_c x d: b_π(i) − c_i
        self.register_buffer("forget_ids", torch.tensor(forget_classes, dtype=torch.long))
        self.bandwidth, self.temperature, self.nonnegative = bandwidth, temperature, nonnegative

    @property
    def feature_dim(self) -> int:
        return self.centres.shape[1]

    @property
    def forget_classes(self) -> list[int]:
        return self.forget_ids.tolist()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        gate = F.softmax(self.detector(flat) / self.temperature, dim=1)[:, self.forget_ids].sum(dim=1)  # g(z)
        distances = torch.cdist(flat, self.centres, compute_mode="donot_use_mm_for_euclid_dist")
        weights = F.softmax(-(distances**2) / (2 * self.bandwidth**2), dim=1)  # w_i(z)
        out = flat + gate[:, None] * (weights @ self.offsets)
        if self.nonnegative:
            out = out.clamp_min(0)
        out = out - (out @ self.coords.T) @ self.forget_rows  # E: the forget prototype coordinates erased
        return out.reshape(z.shape)


class SmoothTransplant(FeatureEdit):
    """MoRE-S: forget features translated cell by cell onto remain features, softly gated by the model's head.

    >>> unlearned = SmoothTransplant(seed=0).unlearn(model, splits)
    """

    name = "MoRE-S"
    uses_head = True  # the model's own head detects (gates) forget samples

    def __init__(
        self,
        bandwidth: float = 0.25,
        temperature: float = 1.0,
        max_centres: int | None = 2000,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        """`max_per_class` / `tol`: the sample budget of the one pass (methods/budget.py); None reads all."""
        super().__init__()
        self.max_per_class, self.tol = max_per_class, tol
        self.budget = Budget(max_per_class, tol, seed=seed)
        if bandwidth <= 0 or temperature <= 0:
            raise UnlearnError(f"bandwidth and temperature must be > 0, got {bandwidth} and {temperature}.")
        if max_centres is not None and max_centres < 1:
            raise UnlearnError(f"max_centres must be >= 1 or None (every forget sample), got {max_centres}.")
        self.bandwidth, self.temperature, self.max_centres, self.rtol = bandwidth, temperature, max_centres, rtol
        self.seed, self.batch_size, self.progress = seed, batch_size, progress
        self.head: nn.Module | None = None

    def fit(
        self,
        features: nn.Module,
        data: Dataset | DataLoader,
        forget_classes: list[int],
        num_classes: int | None = None,
        exclude: list[int] = (),
        head: nn.Module | None = None,
    ) -> SmoothTransplant:
        """Prototypes (for E), forget centres and their remain partners from one pass of `features` over `data`."""
        head = head if head is not None else self.head
        if head is None:
            raise UnlearnError("MoRE-S gates with the classification head: pass head=<the model's head>.")
        detector = frozen_copy(head)
        with self.cost.phase("features"):
            z, y, stats = collect_budgeted(
                features, data, self.budget, num_classes, self.batch_size, "MoRE-S features", self.progress
            )
        with self.cost.phase("prototypes"):
            forget_ids = self._check_forget_classes(forget_classes, num_classes or len(stats.counts))
            protos = prototypes_from_sums(stats.sums, stats.counts, forget_ids, list(exclude), stats.standard_errors())
            forget = protos.columns(forget_ids)
            coords, _ = forget_coordinates(protos.matrix, forget, True, self.rtol)
        with self.cost.phase("centres"):
            generator = torch.Generator().manual_seed(self.seed)
            is_forget = torch.isin(y, torch.tensor(forget_ids))
            remain = ~torch.isin(y, torch.tensor([*forget_ids, *exclude], dtype=torch.long))
            centres, bank = z[is_forget].double(), z[remain].double()
            if len(bank) == 0 or len(centres) < 2:
                raise UnlearnError("MoRE-S needs remain samples and at least two forget samples in the fit data.")
            if self.max_centres is not None and len(centres) > self.max_centres:
                centres = centres[torch.randperm(len(centres), generator=generator)[: self.max_centres]]
            partners = bank[torch.randint(len(bank), (len(centres),), generator=generator)]
            spacing = float(nearest_others(centres, 1)[0].median())
        self.layer = SmoothTransplantLayer(
            protos.matrix[:, forget].T,
            coords,
            centres,
            partners - centres,
            max(self.bandwidth * spacing, 1e-6),
            detector,
            forget_ids,
            self.temperature,
            bool((z >= 0).all()),
        ).to(module_device(features))
        return self
