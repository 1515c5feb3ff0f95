"""MoRE-T (Transplant): a MoRE variant that leaves an attacker on the features nothing of the forget class.

    m_f = D_f z (PO coordinates, as MoRE)
    ẑ = E (b_{j(z)} + ε(z))     if argmax g(z) ∈ F   (the model's own head g calls it a forget class)
    ẑ = E z                      otherwise            E = I − P_f D_f (Erase, eq. 5: remain samples barely move)

b_1..b_B are features of real remain training samples (the "experts": one per bank entry), j(z) is a
deterministic, locally constant hash of z (quantised random projections), and ε = 0.7 (b_a − b_b) is a
step along the data between two of b_j's 4 nearest other entries, the pair drawn by a second hash of z:
the output is a new point on the remain manifold, and two forget samples sent to one entry differ.

Why (measured, `bench/audit.py`, 3 seeds): MoRE moves only the prototype coordinate m_f and keeps the
residual outside span(P), so a forget feature stays recognisable to k-NN and MLP probes; its per-pass
random expert lets an attacker who queries one input several times read m_f from the answers (digits:
100 % back). Here a detected forget sample gets the feature of an unrelated remain sample instead, erased
like every remain output: the output depends on z only through the hash, so it is many-to-one (no
inversion), deterministic (repeated queries agree) and distributed like the remain outputs (nothing for
a probe to learn). The step keeps the output from coinciding with a training output, which an attacker
reads from the distance to the nearest training feature: without it 48 % (digits) and 44 % (shapes) of
forget-test samples come back that way, with it 14 % and 12 % (chance 10 %). Erasing the transplanted
output matters: a raw bank entry keeps its m_f component, which remain outputs have lost, and an MLP
read that (shapes, before the fix: 58 %).

Choices (also in the README): the detector is the model's own head (a frozen copy inside the edit), so
a remain sample is only transplanted when the Original already misclassified it as a forget class
(the others only lose their tiny m_f); without a head (`fit` called directly) it is max_f m_f > τ = 0.5, which on shapes
catches only 64 % of forget-test samples (the head: 86 %) and moves 4 % of remain-test samples (1.7 %).
The bank is every remain training sample, or a seeded subset of `bank_size`; 8 projections with
bin width a quarter of the forget features' spread along each. Memory is O(B·d), like ESC's O(N_f·d)
and unlike MoRE's O(k·d); the bank holds remain features (not inputs), which the edit's owner must
treat as training data.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit
from unlearn.methods.budget import Budget, collect_budgeted
from unlearn.methods.more import HASH_MODULUS, forget_coordinates
from unlearn.methods.prototypes import prototypes_from_sums
from unlearn.models.split import frozen_copy
from unlearn.runtime import module_device

NEIGHBOURS = 4  # the tangent step is between two of an entry's 4 nearest other entries (12 ordered pairs)


def nearest_others(bank: torch.Tensor, count: int = 2, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to, and indices of, each row's `count` nearest other rows of `bank` (B x count each)."""
    distances, indices = [], []
    for start in range(0, len(bank), chunk):
        dist = torch.cdist(bank[start : start + chunk], bank)
        dist[torch.arange(len(dist)), torch.arange(start, start + len(dist))] = float("inf")
        nearest = dist.topk(count, dim=1, largest=False)
        distances.append(nearest.values)
        indices.append(nearest.indices)
    return torch.cat(distances), torch.cat(indices)


JITTER_MODES = ("tangent", "reflect", "isotropic")


def jittered(bank: torch.Tensor, scale: float, mode: str, generator: torch.Generator) -> torch.Tensor:
    """b_j + ε_j, a fixed step per entry (the ablations; "tangent" steps per input in `TransplantLayer`).

    "reflect": ε_j = scale (b_j − b_n1), away from the nearest other entry (measured: 20 % / 18 % worst case);
    "isotropic": a random direction of length scale |b_j − b_n1|, on b_j's non-zero coordinates when the
    bank is non-negative (digits: 18 %). Non-negative (ReLU) features stay non-negative.
    """
    distance, nearest = nearest_others(bank, 1)
    nonnegative = bool((bank >= 0).all())
    if mode == "reflect":
        out = bank + scale * (bank - bank[nearest[:, 0]])
    else:
        noise = torch.randn(bank.shape, generator=generator, dtype=bank.dtype)
        if nonnegative:  # keep the zero pattern of ReLU features
            noise = noise * (bank > 0)
        out = bank + noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12) * (scale * distance[:, 0])[:, None]
    return out.clamp_min(0) if nonnegative else out


class TransplantLayer(nn.Module):
    """ẑ = E (b_j + s (b_a − b_b)) for samples the detector calls a forget class, else E z; deterministic.

    j = j(z) is a bank entry and (a, b) an ordered pair of its K nearest other entries (`neighbours`, B x K),
    both from hashes of z, so two forget samples sent to one entry still get different outputs;
    `neighbours` None means no step (the bank may carry a fixed per-entry jitter instead). `detector` is a
    frozen copy of the classification head (argmax in the forget classes), or None for the gate m_f > τ.
    """

    def __init__(
        self,
        forget_rows: torch.Tensor,
        coords: torch.Tensor,
        bank: torch.Tensor,
        projection: torch.Tensor,
        widths: torch.Tensor,
        multipliers: torch.Tensor,
        forget_classes: list[int],
        tau: float = 0.5,
        detector: nn.Module | None = None,
        neighbours: torch.Tensor | None = None,
        step: float = 0.0,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("neighbours", None if neighbours is None else neighbours.long())
        self.step, self.nonnegative = step, bool((bank >= 0).all())
        self.register_buffer("forget_rows", forget_rows.float())  # |F| x d: P_f
        self.register_buffer("coords", coords.float())  # |F| x d: D_f
        self.register_buffer("bank", bank.float())  # B x d
        self.register_buffer("projection", projection.float())  # H x d
        self.register_buffer("widths", widths.float())  # H
        self.register_buffer("multipliers", multipliers.long())  # H
        self.register_buffer("forget_ids", torch.tensor(forget_classes, dtype=torch.long))
        self.tau = tau

    @property
    def feature_dim(self) -> int:
        return self.bank.shape[1]

    @property
    def forget_classes(self) -> list[int]:
        return self.forget_ids.tolist()

    def route(self, flat: torch.Tensor, salt: int = 0) -> torch.Tensor:
        """A hash of floor(R z / w) per row (constant on small neighbourhoods of z); `salt` gives another one."""
        cells = torch.floor(flat @ self.projection.T / self.widths).long()
        return (cells * (self.multipliers + salt)).sum(dim=1).remainder(HASH_MODULUS)

    def transplant(self, flat: torch.Tensor) -> torch.Tensor:
        """The remain-like output of each row: its bank entry, plus the step between two of its neighbours."""
        entry = self.route(flat).remainder(len(self.bank))
        out = self.bank[entry]
        if self.neighbours is None:
            return out
        k = self.neighbours.shape[1]
        pair = self.route(flat, salt=1).remainder(k * (k - 1))
        first, second = pair // (k - 1), pair % (k - 1)
        second = second + (second >= first).long()  # an ordered pair of two different neighbours
        rows = self.neighbours[entry]
        step = self.bank[rows.gather(1, first[:, None])[:, 0]] - self.bank[rows.gather(1, second[:, None])[:, 0]]
        out = out + self.step * step
        return out.clamp_min(0) if self.nonnegative else out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        m_f = flat @ self.coords.T  # B x |F|
        if self.detector is None:
            detected = m_f.max(dim=1).values > self.tau
        else:
            detected = torch.isin(self.detector(flat).argmax(dim=1), self.forget_ids)
        erased = flat - m_f @ self.forget_rows
        moved = self.transplant(flat)
        moved = moved - (moved @ self.coords.T) @ self.forget_rows  # erased like every remain output, so m_f = 0
        out = torch.where(detected[:, None], moved, erased)
        return out.reshape(z.shape)


class Transplant(FeatureEdit):
    """MoRE-T: detected forget samples get a remain sample's feature; the rest are erased in PO space.

    >>> edit = Transplant(seed=0).fit(features, train_data, forget_classes=[4])
    >>> unlearned = edit.apply(model)
    """

    name = "MoRE-T"
    uses_head = True  # the model's own head detects (gates) forget samples

    def __init__(
        self,
        tau: float = 0.5,
        jitter: float = 0.7,
        bank_size: int | None = None,
        num_hashes: int = 8,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        jitter_mode: str = "tangent",
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        """`max_per_class` / `tol`: the sample budget of the one pass (prototypes and bank; methods/budget.py)."""
        super().__init__()
        self.max_per_class, self.tol = max_per_class, tol
        self.budget = Budget(max_per_class, tol, seed=seed)
        if jitter < 0:
            raise UnlearnError(f"jitter must be >= 0, got {jitter}.")
        if jitter_mode not in JITTER_MODES:
            raise UnlearnError(f"jitter_mode must be one of {JITTER_MODES}, got {jitter_mode!r}.")
        self.jitter_mode = jitter_mode
        self.tau, self.jitter, self.bank_size, self.num_hashes, self.rtol = tau, jitter, bank_size, num_hashes, rtol
        self.seed, self.batch_size, self.progress = seed, batch_size, progress
        self.rank = 0
        self.samples: dict | None = None  # samples read per class and the prototypes' standard errors
        self.head: nn.Module | None = None  # the detector `unlearn` takes from the model

    def fit(
        self,
        features: nn.Module,
        data: Dataset | DataLoader,
        forget_classes: list[int],
        num_classes: int | None = None,
        exclude: list[int] = (),
        head: nn.Module | None = None,
    ) -> Transplant:
        """One pass over `data` for prototypes (MoRE's PO coordinates) and the bank of remain features.

        `head` (default: the one `unlearn` found) detects forget samples; None falls back to m_f > τ.
        """
        head = head if head is not None else self.head
        detector = None
        if head is not None:
            detector = frozen_copy(head)
        with self.cost.phase("features"):
            z, y, stats = collect_budgeted(
                features, data, self.budget, num_classes, self.batch_size, "MoRE-T features", self.progress
            )
        with self.cost.phase("prototypes"):
            forget_ids = self._check_forget_classes(forget_classes, num_classes or len(stats.counts))
            protos = prototypes_from_sums(stats.sums, stats.counts, forget_ids, list(exclude), stats.standard_errors())
            self.samples = protos.summary()
            forget = protos.columns(forget_ids)
            coords, self.rank = forget_coordinates(protos.matrix, forget, True, self.rtol)
        with self.cost.phase("bank"):
            generator = torch.Generator().manual_seed(self.seed)
            remain = ~torch.isin(y, torch.tensor([*forget_ids, *exclude], dtype=torch.long))
            bank = z[remain]
            if len(bank) == 0:
                raise UnlearnError("MoRE-T needs remain samples in the data given to fit; none were found.")
            if self.bank_size is not None and self.bank_size < len(bank):
                bank = bank[torch.randperm(len(bank), generator=generator)[: self.bank_size]]
            bank, neighbours = bank.double(), None
            needed = 3 if self.jitter_mode == "tangent" else 2  # a step between two others, or from one other
            if self.jitter > 0 and len(bank) < needed:
                raise UnlearnError(
                    f"MoRE-T's {self.jitter_mode} jitter needs at least {needed} remain samples in the bank, got "
                    f"{len(bank)}; pass more remain data, a larger bank_size, or jitter=0."
                )
            if self.jitter > 0 and self.jitter_mode == "tangent":
                neighbours = nearest_others(bank, min(NEIGHBOURS, len(bank) - 1))[1]
            elif self.jitter > 0:
                bank = jittered(bank, self.jitter, self.jitter_mode, generator)
            projection = torch.randn(self.num_hashes, z.shape[1], generator=generator, dtype=torch.float64)
            forget_z = z[torch.isin(y, torch.tensor(forget_ids))].double()
            widths = (forget_z @ projection.T).std(dim=0).clamp_min(1e-6) / 4
            multipliers = torch.randint(1, 2**20, (self.num_hashes,), generator=generator)
        self.layer = TransplantLayer(
            protos.matrix[:, forget].T,
            coords,
            bank,
            projection,
            widths,
            multipliers,
            forget_ids,
            self.tau,
            detector,
            neighbours,
            self.jitter,
        ).to(module_device(features))
        return self
