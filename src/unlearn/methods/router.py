"""MoRE with a conditional router (paper §3.3 and Appendix D; MORE.md §4): MoRE-P, MoRE-P-T(-B), MoRE-R.

    router     e(z) = argmax_e (W_r z)_e                           top-1, input dependent
    init       W_r = (P_R⁺)[:N_e]   (Alg. 4, pseudo-inverse of the remain prototypes)   or random ("R")
    finetune   min_{W_r}  L_R + λ_F L_F + λ_FLB L_FLB               (router only; h, experts and g frozen)
               L_R = CE on remain,  L_F = −CE on forget,
               L_FLB = N_e Σ_e I_e L_e over forget samples, I_e = mean softmax(W_r z)_e, L_e = share routed to e

Choices the paper leaves open (also in the README):
- Gradient through a hard top-1 choice: the edit's correction is multiplied by p_e / stop_grad(p_e) of the
  chosen expert, which is 1 in value (the forward pass is exactly the top-1 expert) and passes the
  Switch-Transformer gradient to W_r.
- Alg. 4 has only k_R rows; with N_e > k_R the remaining router rows are drawn at random (seeded) at the
  mean norm of the others.
- Finetuning runs on the features h(x) of D_f ∪ D_r computed once (h is frozen), Adam lr 1e-5, batch 512,
  10 epochs, λ_F = 0.001, λ_FLB = 1.0 (Appendix D.3); `epochs=0` gives the untrained MoRE-P / MoRE-R.
- Load balance is reported as the coefficient of variation (std / mean) of the number of forget train
  samples routed to each expert (`load_cv`; 0 = perfectly balanced).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.methods.budget import collect_budgeted
from unlearn.methods.more import MoRE, MoRELayer, load_cv, pinv_svd
from unlearn.models.split import frozen_copy, split_model


def pinv_router(remain_prototypes: torch.Tensor, num_experts: int, generator: torch.Generator) -> torch.Tensor:
    """Alg. 4: the first N_e rows of P_R⁺ (N_e x d); rows beyond k_R are random at the rows' mean norm."""
    rows = pinv_svd(remain_prototypes)[0].float()[:num_experts]
    extra = num_experts - len(rows)
    if extra > 0:
        noise = torch.randn(extra, rows.shape[1], generator=generator)
        noise = noise / noise.norm(dim=1, keepdim=True) * rows.norm(dim=1).mean()
        rows = torch.cat([rows, noise])
    return rows


class ConditionalMoRELayer(MoRELayer):
    """A MoRE layer whose expert is chosen per sample by a linear router, top-1 (deterministic)."""

    def __init__(self, layer: MoRELayer, router_weight: torch.Tensor) -> None:
        super().__init__(layer.prototype_rows.T, layer.coords, layer.forget.tolist(), layer.targets, layer.seed)
        self.classes.copy_(layer.classes)
        self.router = nn.Linear(router_weight.shape[1], router_weight.shape[0], bias=False)
        with torch.no_grad():
            self.router.weight.copy_(router_weight)

    def gate(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen expert per sample, router probabilities)."""
        probs = F.softmax(self.router(flat), dim=1)
        return probs.argmax(dim=1), probs

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        chosen, probs = self.gate(flat)
        p = probs.gather(1, chosen[:, None])
        straight_through = p / p.detach()  # 1 in value; carries the router gradient
        return (flat + straight_through * self.correction(flat, chosen)).reshape(z.shape)


class ConditionalMoRE(MoRE):
    """MoRE with a conditional top-1 router: pseudo-inverse (`init="pinv"`) or random initialisation,
    optionally finetuned (router only) with L_R + λ_F L_F + λ_FLB L_FLB."""

    name = "ConditionalMoRE"

    def __init__(
        self,
        num_experts: int = 8,
        init: str = "pinv",
        epochs: int = 0,
        lr: float = 1e-5,
        batch_size: int = 512,
        lambda_f: float = 0.001,
        lambda_flb: float = 1.0,
        orthogonal: bool = True,
        rtol: float = 1e-6,
        seed: int = 0,
        progress: bool = False,
        max_per_class: int | None = None,
        tol: float | None = None,
    ) -> None:
        super().__init__(num_experts, "remap", orthogonal, rtol, seed, 256, progress, None, False, max_per_class, tol)
        if init not in ("pinv", "random"):
            raise UnlearnError(f"init must be 'pinv' or 'random', got {init!r}.")
        if epochs < 0 or lr <= 0 or batch_size < 1 or lambda_f < 0 or lambda_flb < 0:
            raise UnlearnError("epochs >= 0, lr > 0, batch_size >= 1 and lambda_f, lambda_flb >= 0 are required.")
        self.init, self.epochs, self.lr, self.router_batch = init, epochs, lr, batch_size
        self.lambda_f, self.lambda_flb = lambda_f, lambda_flb
        self.load_cv: float | None = None

    def unlearn(self, model: nn.Module, splits: ForgetSplits, head: str | None = None) -> nn.Module:
        features, head_module = split_model(model, head)
        head_module = frozen_copy(head_module)  # the router trains through a copy: the user's head stays as it is
        with self.cost.phase("features"):
            z, y, _ = collect_budgeted(features, splits.train(), self.budget, splits.num_classes, 512)
        data = TensorDataset(z.flatten(1), y)
        super().fit(nn.Identity(), data, splits.forget_classes, splits.num_classes)
        generator = torch.Generator().manual_seed(self.seed)
        protos = self.prototypes
        remain = [i for i, c in enumerate(protos.classes) if c not in self.forget_classes]
        if self.init == "pinv":
            weight = pinv_router(protos.matrix[:, remain], self.num_experts, generator)
        else:
            weight = torch.randn(self.num_experts, protos.matrix.shape[0], generator=generator) * 0.01
        self.layer = ConditionalMoRELayer(self.layer, weight.to(protos.matrix.device))
        if self.epochs:
            with self.cost.phase("router"):
                self._finetune(data, head_module, generator)
        is_forget = torch.isin(y, torch.tensor(self.forget_classes))
        with torch.no_grad():
            chosen, _ = self.layer.gate(z.flatten(1)[is_forget].to(weight.device))
        self.load_cv = load_cv(chosen.cpu(), self.num_experts)
        return self.apply(model, head)

    def _finetune(self, data: TensorDataset, head: nn.Module, generator: torch.Generator) -> None:
        """Train the router only, on precomputed features, with the frozen experts and head."""
        layer, forget = self.layer, torch.tensor(self.forget_classes)
        optimizer = torch.optim.Adam(layer.router.parameters(), lr=self.lr)
        loader = DataLoader(data, batch_size=self.router_batch, shuffle=True, generator=generator)
        device = layer.prototype_rows.device
        for _ in range(self.epochs):
            for z, y in loader:
                z, y = z.to(device), y.to(device)
                is_forget = torch.isin(y, forget.to(device))
                logits = head(layer(z))
                loss = z.new_zeros(())
                if (~is_forget).any():
                    loss = loss + F.cross_entropy(logits[~is_forget], y[~is_forget])
                if is_forget.any():
                    loss = loss - self.lambda_f * F.cross_entropy(logits[is_forget], y[is_forget])
                    chosen, probs = layer.gate(z[is_forget])
                    importance = probs.mean(dim=0)
                    share = torch.bincount(chosen, minlength=self.num_experts).float() / len(chosen)
                    loss = loss + self.lambda_flb * self.num_experts * (importance * share).sum()
                (grad,) = torch.autograd.grad(loss, [layer.router.weight])
                layer.router.weight.grad = grad
                optimizer.step()
