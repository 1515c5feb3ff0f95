"""MoRE: Mixture of Remapping Experts (MoRE paper §3, Alg. 1–2; MORE.md §1–4).

    m = D z,   D = P⁺ (via SVD)                              prototype-orthogonal coordinates
    Erase:  ẑ = (I − P_f D) z                                 eq. 5
    Remap:  ẑ = (I − P_f D + P_t^(e) diag(s) D) z,  e ~ U{1..N_e}   eq. 6, Alg. 2

Choices the paper leaves open (also in the README):
- P⁺ drops singular values below `rtol · σ_max` (default 1e-6); a rank-deficient P gives a warning.
- Without PO (ablation) the forget coordinates are m_f = P_f⁺ z, so P_f D becomes the orthogonal
  projector onto span(P_f) and no decorrelation against remain prototypes happens.
- Each expert maps every forget class to a remain class drawn uniformly (seeded); the router draws
  an expert per sample at every forward pass from the layer's own seeded generator, in train and
  eval mode alike (so KR probing sees the stochastic routing, as in the paper: `routing="random"`).
- Deterministic evaluation (`routing="hash"`, not in the paper): the expert of a sample is a hash of its
  feature, e = H(round(z / q)) mod N_e with q = 1e-3 of the prototypes' mean absolute entry, so the
  same input gets the same expert in every call, batch and process (evaluating one edit twice gives
  one answer); the experts stay uniformly used over many inputs, but an input no longer has a
  distribution of answers (what the repeated-query attack reads).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.errors import UnlearnError
from unlearn.methods.base import FeatureEdit, LinearEdit
from unlearn.methods.budget import Budget
from unlearn.methods.prototypes import Prototypes, class_sums, prototypes_from_sums


def pinv_svd(matrix: torch.Tensor, rtol: float = 1e-6) -> tuple[torch.Tensor, int]:
    """P⁺ = V Σ⁻¹ Uᵀ from the thin SVD, treating σ ≤ rtol·σ_max as zero (as torch and numpy do); returns (P⁺, rank)."""
    u, sigma, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    keep = sigma > rtol * sigma.max()
    inverse = torch.where(keep, 1.0 / sigma, torch.zeros_like(sigma))
    return (vh.T * inverse) @ u.T, int(keep.sum())


def forget_coordinates(
    prototypes: torch.Tensor, forget: list[int], orthogonal: bool = True, rtol: float = 1e-6
) -> tuple[torch.Tensor, int]:
    """Rows of the projection giving m_f: (P⁺)[F] with PO, P_f⁺ without; returns (|F| x d, rank)."""
    if orthogonal:
        pinv, rank = pinv_svd(prototypes, rtol)
        return pinv[forget], rank
    return pinv_svd(prototypes[:, forget], rtol)


def erase_matrix(prototypes: torch.Tensor, coords: torch.Tensor, forget: list[int]) -> torch.Tensor:
    """E = I − P_f D (eq. 5)."""
    p_f = prototypes[:, forget].to(coords)
    return torch.eye(len(p_f), dtype=coords.dtype) - p_f @ coords


def remap_matrix(prototypes: torch.Tensor, coords: torch.Tensor, forget: list[int], targets: list[int]) -> torch.Tensor:
    """E = I − P_f D + P_t diag(s) D, column i of P_t being the prototype of target class targets[i] (eq. 6)."""
    return erase_matrix(prototypes, coords, forget) + prototypes[:, targets].to(coords) @ coords


def load_cv(choices: torch.Tensor, num_experts: int) -> float:
    """Coefficient of variation (std / mean) of how many samples each expert received (0 = balanced)."""
    counts = torch.bincount(choices, minlength=num_experts).double()
    return float(counts.std(unbiased=False) / counts.mean())


ROUTINGS = ("random", "hash")
HASH_MODULUS = 2_147_483_647


def hash_experts(flat: torch.Tensor, quantum: float, multipliers: torch.Tensor, num_experts: int) -> torch.Tensor:
    """e = (Σ_i round(z_i / q) · a_i mod p) mod N_e per row: the same feature always gets the same expert."""
    cells = torch.round(flat.double() / quantum).long()
    return (cells * multipliers).sum(dim=1).remainder(HASH_MODULUS).remainder(num_experts)


def draw_targets(num_forget: int, remain: list[int], num_experts: int, generator: torch.Generator) -> torch.Tensor:
    """(N_e x |F|) prototype columns: expert e remaps forget class i to a uniformly drawn remain class."""
    picks = torch.randint(len(remain), (num_experts, num_forget), generator=generator)
    return torch.tensor(remain)[picks]


def check_layer_tensors(prototypes, coords, forget, targets, classes) -> None:
    """Shapes, index ranges and finiteness of a MoRE layer's tensors (e.g. read back from a file), so a bad
    edit is refused when it is built, not at its first forward pass."""
    if prototypes.dim() != 2 or coords.dim() != 2:
        raise UnlearnError(
            f"MoRE layer: prototypes and coords must be matrices, got {prototypes.dim()}-D, {coords.dim()}-D."
        )
    dim, k = prototypes.shape
    forget = torch.as_tensor(forget).long().flatten()
    if coords.shape != (len(forget), dim):
        raise UnlearnError(f"MoRE layer: coords must be {len(forget)} x {dim}, got {tuple(coords.shape)}.")
    if len(forget) and (int(forget.min()) < 0 or int(forget.max()) >= k):
        raise UnlearnError(f"MoRE layer: forget columns {forget.tolist()} are outside the {k} prototype columns.")
    if targets is not None:
        if targets.dim() != 2 or targets.shape[1] != len(forget) or len(targets) == 0:
            raise UnlearnError(f"MoRE layer: targets must be (experts x {len(forget)}), got {tuple(targets.shape)}.")
        bad = targets[(targets < 0) | (targets >= k) | torch.isin(targets, forget)]
        if len(bad):
            raise UnlearnError(f"MoRE layer: remap targets {bad.tolist()} are not remain columns 0..{k - 1}.")
    if classes is not None and len(torch.as_tensor(classes).flatten()) != k:
        raise UnlearnError(f"MoRE layer: {len(torch.as_tensor(classes).flatten())} class ids for {k} prototypes.")
    if not (torch.isfinite(prototypes).all() and torch.isfinite(coords).all()):
        raise UnlearnError("MoRE layer: prototypes or coords contain NaN or inf.")


class MoRELayer(nn.Module):
    """ẑ = z + (P_t^(e) − P_f) m_f with m_f = D_f z and a random expert e per sample; erase when no targets.

    `forget` and `targets` index prototype columns; `classes` gives the class id of each column.

    Batched: the per-sample coefficients over prototype columns are scattered into a (B x k) matrix,
    then one (B x k)(k x d) product gives every sample's correction.
    """

    def __init__(
        self,
        prototypes: torch.Tensor,
        coords: torch.Tensor,
        forget: list[int],
        targets: torch.Tensor | None,
        seed: int = 0,
        classes: list[int] | torch.Tensor | None = None,
        routing: str = "random",
    ) -> None:
        super().__init__()
        check_layer_tensors(prototypes, coords, forget, targets, classes)
        if routing not in ROUTINGS:
            raise UnlearnError(f"routing must be one of {ROUTINGS}, got {routing!r}.")
        self.routing = routing
        self.register_buffer("prototype_rows", prototypes.T.contiguous().float())  # k x d
        self.register_buffer("coords", coords.float())  # |F| x d
        self.register_buffer("forget", torch.tensor(forget, dtype=torch.long))  # prototype columns
        # class id of each prototype column (columns skip classes without samples or already forgotten)
        ids = torch.arange(prototypes.shape[1]) if classes is None else torch.as_tensor(classes)
        self.register_buffer("classes", ids.long())
        self.register_buffer("targets", None if targets is None else targets.long())  # N_e x |F|
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        # routing="hash": the quantum q and the per-coordinate multipliers a_i of `hash_experts`
        self.quantum = float(prototypes.abs().mean()) * 1e-3 or 1e-6
        multipliers = torch.randint(1, 2**20, (prototypes.shape[0],), generator=torch.Generator().manual_seed(seed))
        self.register_buffer("hash_multipliers", multipliers, persistent=False)  # rebuilt from the seed

    @property
    def feature_dim(self) -> int:
        return self.prototype_rows.shape[1]

    @property
    def forget_classes(self) -> list[int]:
        """Class ids this layer forgets."""
        return self.classes[self.forget].tolist()

    @property
    def num_experts(self) -> int:
        return 1 if self.targets is None else len(self.targets)

    def experts(self) -> torch.Tensor:
        """The N_e expert matrices E^(e) (N_e x d x d), for inspection and absorption."""
        p = self.prototype_rows.T.double()
        forget = self.forget.tolist()
        if self.targets is None:
            return erase_matrix(p, self.coords.double(), forget)[None].float()
        return torch.stack([remap_matrix(p, self.coords.double(), forget, t.tolist()) for t in self.targets]).float()

    def route(self, batch: int, device: torch.device) -> torch.Tensor:
        """Stochastic router (routing="random"): one uniformly drawn expert per sample, drawn on `device`.

        The generator lives on the device of the features, so routing copies nothing between host and
        device; on a device change it restarts from the seed (CPU draws stay those of earlier versions).
        """
        if self.generator.device != device:
            self.generator = torch.Generator(device).manual_seed(self.seed)
        return torch.randint(self.num_experts, (batch,), generator=self.generator, device=device)

    def correction(self, flat: torch.Tensor, experts: torch.Tensor | None) -> torch.Tensor:
        """(P_t^(e) − P_f) m_f per row of `flat` (B x d), expert e = experts[b]; −P_f m_f when erasing.

        Computed in the features' dtype (bf16/fp16 models keep theirs; the buffers are stored in fp32),
        with as few operations as the arithmetic allows: a batch of one pays per operation, not per flop.
        """
        coords, rows = self.coords, self.prototype_rows
        if flat.dtype != coords.dtype:
            coords, rows = coords.to(flat.dtype), rows.to(flat.dtype)
        m_f = F.linear(flat, coords)  # B x |F|
        weights = flat.new_zeros(len(flat), len(rows))
        weights.index_add_(1, self.forget, m_f, alpha=-1)
        if self.targets is not None:
            weights.scatter_add_(1, self.targets[experts], m_f)  # B x |F| columns
        return weights @ rows

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z if z.dim() == 2 else z.reshape(-1, z.shape[-1])
        experts = None
        if self.targets is not None and self.routing == "hash":
            experts = hash_experts(flat, self.quantum, self.hash_multipliers, self.num_experts)
        elif self.targets is not None:
            experts = self.route(len(flat), flat.device)
        out = flat + self.correction(flat, experts)
        return out if z.dim() == 2 else out.reshape(z.shape)


class MoRE(FeatureEdit):
    """Mixture of Remapping Experts with a stochastic router (the paper's default).

    >>> edit = MoRE(num_experts=8, seed=0).fit(features, train_loader, forget_classes=[4])
    >>> unlearned = edit.apply(model)
    """

    name = "MoRE"

    def __init__(
        self,
        num_experts: int = 8,
        mode: str = "remap",
        orthogonal: bool = True,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        module: str | None = None,
        pool: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
        routing: str = "random",
    ) -> None:
        """`module` names an inner module to edit instead of the head's input (`pool`: see methods/inner.py);
        `routing` "random" (the paper) draws an expert per sample and pass, "hash" picks it from the feature.

        `max_per_class` / `tol`: the sample budget of prototype collection (methods/budget.py); None reads all.
        """
        super().__init__(module, pool)
        if routing not in ROUTINGS:
            raise UnlearnError(f"routing must be one of {ROUTINGS}, got {routing!r}.")
        self.routing = routing
        self.max_per_class, self.tol = max_per_class, tol
        self.budget = Budget(max_per_class, tol, seed=seed)
        if mode not in ("remap", "erase"):
            raise UnlearnError(f"mode must be 'remap' or 'erase', got {mode!r}.")
        if mode == "erase" and num_experts != 1:
            raise UnlearnError("erase has no remapping targets, so it takes num_experts=1.")
        self.num_experts, self.mode, self.orthogonal, self.rtol = num_experts, mode, orthogonal, rtol
        self.seed, self.batch_size, self.progress = seed, batch_size, progress
        self.prototypes: Prototypes | None = None
        self.target_class: int | None = None  # Remap may fix it; MoRE draws targets per expert
        self.rank = 0
        self.load_cv: float | None = None  # coefficient of variation of the expert load on forget samples
        self.samples: dict | None = None  # samples read per class and the prototypes' standard errors

    def fit(
        self,
        features: nn.Module,
        data: Dataset | DataLoader,
        forget_classes: list[int],
        num_classes: int | None = None,
        exclude: list[int] = (),
    ) -> MoRE:
        """Collect prototypes of `features` over `data` (forget and remain samples) and build the experts.

        `exclude`: classes already forgotten by an earlier edit of these features; they get no prototype
        column, so they are neither kept nor used as remap targets (`unlearn` passes them on its own).
        """
        with self.cost.phase("prototypes"):
            stats = class_sums(features, data, num_classes, self.batch_size, self.progress, self.budget)
        forget_ids = self._check_forget_classes(forget_classes, num_classes or len(stats.counts))
        self.prototypes = prototypes_from_sums(stats.sums, stats.counts, forget_ids, list(exclude), stats.stderr)
        protos = self.prototypes
        self.samples = protos.summary()
        forget = protos.columns(forget_ids)
        with self.cost.phase("svd"):
            coords, self.rank = forget_coordinates(protos.matrix, forget, self.orthogonal, self.rtol)
        expected = protos.matrix.shape[1] if self.orthogonal else len(forget)
        if self.rank < expected:
            warnings.warn(
                f"the prototype matrix has rank {self.rank} < {expected} columns (rtol={self.rtol}): some "
                "prototypes are linear combinations of others, so D P = I holds only on the rank-"
                f"{self.rank} subspace and forgetting may be partial.",
                stacklevel=2,
            )
        with self.cost.phase("experts"):
            targets = None
            if self.mode == "remap":
                remain = [i for i in range(len(protos.classes)) if i not in forget]
                if self.target_class is None:
                    generator = torch.Generator().manual_seed(self.seed)
                    targets = draw_targets(len(forget), remain, self.num_experts, generator)
                else:
                    targets = torch.full((1, len(forget)), self._target_column(protos, forget))
            layer = MoRELayer(protos.matrix, coords, forget, targets, self.seed, protos.classes, self.routing)
            self.layer = layer.to(protos.matrix.device)
        if self.num_experts > 1:  # the balance the stochastic router gives the forget train samples
            num_forget = int(protos.counts[forget].sum())
            draws = torch.randint(self.num_experts, (num_forget,), generator=torch.Generator().manual_seed(self.seed))
            self.load_cv = load_cv(draws, self.num_experts)
        return self

    def _target_column(self, protos: Prototypes, forget: list[int]) -> int:
        """Prototype column of the fixed remap target, which must be a remain class with samples."""
        if self.target_class not in protos.classes or protos.classes.index(self.target_class) in forget:
            remain = [c for i, c in enumerate(protos.classes) if i not in forget]
            raise UnlearnError(
                f"target_class {self.target_class} is not a remain class with samples; choose from {remain}."
            )
        return protos.classes.index(self.target_class)

    def as_linear(self) -> LinearEdit:
        """The single-expert edit as a plain d x d linear layer."""
        matrix = self.linear_matrix()
        if matrix is None:
            raise UnlearnError("only a fitted single-expert MoRE (Remap/Erase) is a linear map.")
        return LinearEdit(matrix)


class Remap(MoRE):
    """One remapping expert: every forget class goes to one remain class (paper's 'Remap')."""

    name = "Remap"

    def __init__(
        self,
        target_class: int | None = None,
        orthogonal: bool = True,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        module: str | None = None,
        pool: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        """`target_class` fixes the remain class every forget class is remapped to (drawn with the seed if None)."""
        super().__init__(1, "remap", orthogonal, rtol, seed, batch_size, progress, module, pool, max_per_class, tol)
        self.target_class = target_class


class Erase(MoRE):
    """Erase forget prototypes in PO space: ẑ = (I − P_f D) z (paper's 'Erase')."""

    name = "Erase"

    def __init__(
        self,
        orthogonal: bool = True,
        rtol: float = 1e-6,
        seed: int = 0,
        batch_size: int = 256,
        progress: bool = False,
        module: str | None = None,
        pool: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        super().__init__(1, "erase", orthogonal, rtol, seed, batch_size, progress, module, pool, max_per_class, tol)
