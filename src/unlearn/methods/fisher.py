"""Fisher forgetting (Golatkar et al., CVPR 2020), as in the OPTML-Group code (`fisher_new`).

    F_θ  = 1/B · Σ_batches Σ_c  mean_i p(c | x_i) · ( ∇_θ mean_i CE(f_θ(x_i), c) )²     (diagonal, on D_r)
    var  = α · clamp(1 / (F + 1e-8), max = 1e3  [1e2 for head rows])
    θ   ← μ + sqrt(var) ⊙ ε,   ε ~ N(0, I) seeded,   μ = θ

with, as in their `get_mean_var`: var of a matrix / conv kernel averaged over dim 1 (input channels);
the head's forget-class rows (weight and bias) reset to μ = 0, var = 1e-4; var × 10 for the head and for
every 1-d parameter (BatchNorm, biases). No training loop runs.

Estimator (their code): the expected Fisher Σ_c p(c|x) g_c², but with g_c the gradient of the *batch mean*
CE over batches of `fisher_batch_size` = 32 and p(c|x) averaged over the batch, the model in eval mode.
`fisher_batch_size=1` gives Golatkar's per-sample Fisher (one backward per sample and class: slow).
Since a batch-mean gradient is smaller than a per-sample one, α's effect depends on the batch size.

Defaults: α = 0.2 is the `--alpha` default of the OPTML-Group arg_parser (Unlearn-Sparse and
Unlearn-Saliency), which their README says to tune; Golatkar's and SCRUB's notebooks use α = 1e-6 /
1e-7 with per-sample Fisher. Choices: the head is the model's classification head (`find_head`) rather
than "any parameter with num_classes rows"; parameters with requires_grad=False are left untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.methods.base import TrainingUnlearner
from unlearn.models.inference import loader_of
from unlearn.models.split import split_model
from unlearn.models.train import channels_last_format
from unlearn.runtime import eval_mode, module_device


def expected_fisher_diagonal(
    model: nn.Module, data, params: list[nn.Parameter], batch_size: int = 32, channels_last: bool | None = None
) -> list[torch.Tensor]:
    """Diagonal of Σ_c mean_i p(c|x_i) (∇ mean_i CE(x_i, c))², averaged over batches; model in eval mode.

    `channels_last` (None: where `train` would, `prefers_channels_last`): the ten backward passes per batch are
    the whole cost of Fisher forgetting, and oneDNN's channels-last kernels make them 1.29× faster for FashionCNN
    on the CPU (1.08× DigitsCNN, no gain for AllCNN; bench/results/train_speed.md).
    """
    if len(data) == 0:
        raise UnlearnError("Fisher information needs at least one sample; the data is empty.")
    fisher = [torch.zeros_like(p) for p in params]
    device = module_device(model)
    num_batches = 0
    with eval_mode(model), channels_last_format(model, channels_last):
        for x, _ in loader_of(data, batch_size):
            logits = model(x.to(device))  # a channels-last weight makes the convolution channels-last
            probs = logits.detach().softmax(dim=1)
            for c in range(logits.shape[1]):
                target = torch.full((len(logits),), c, device=logits.device)
                loss = F.cross_entropy(logits, target)
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                for total, grad in zip(fisher, grads, strict=True):
                    if grad is not None:
                        total += probs[:, c].mean() * grad.pow(2)
            num_batches += 1
    return [total / num_batches for total in fisher]


def noise_variance(
    fisher: torch.Tensor, alpha: float, is_head: bool, forget_rows: list[int] | None = None
) -> torch.Tensor:
    """The per-weight noise variance of OPTML-Group's `get_mean_var` (forget rows handled by the caller's μ)."""
    var = (1.0 / (fisher + 1e-8)).clamp(max=1e3)
    if is_head:
        var = var.clamp(max=1e2)
    var = alpha * var
    if var.dim() > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
    if is_head and forget_rows:
        var[forget_rows] = 1e-4
    if is_head or var.dim() == 1:
        var = var * 10
    return var


class Fisher(TrainingUnlearner):
    """Add Gaussian noise scaled by the inverse Fisher information of D_r to every weight.

    A `TrainingUnlearner` for its `unlearn` (copy the model, run `update` in a cost phase), but with no
    training recipe: it takes its own __init__ and never calls the training loop.
    """

    name = "Fisher"

    def __init__(self, alpha: float = 0.2, fisher_batch_size: int = 32, seed: int = 0, progress: bool = False) -> None:
        if alpha <= 0:
            raise UnlearnError(f"Fisher alpha (noise scale) must be > 0, got {alpha}.")
        self.alpha, self.fisher_batch_size = alpha, fisher_batch_size
        self.seed, self.progress = seed, progress
        self.cost = CostMeter()

    def update(self, student: nn.Module, original: nn.Module, splits: ForgetSplits, head: str | None) -> None:
        params = [p for p in student.parameters() if p.requires_grad]
        if not params:
            raise UnlearnError("Fisher: the model has no trainable parameters to perturb.")
        with self.cost.phase("fisher"):
            fisher = expected_fisher_diagonal(student, splits.D_r, params, self.fisher_batch_size)
        _, head_module = split_model(student, head)
        head_ids = {id(p) for p in head_module.parameters() if p.shape[0] == splits.num_classes}
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for param, information in zip(params, fisher, strict=True):
                is_head = id(param) in head_ids
                var = noise_variance(information, self.alpha, is_head, splits.forget_classes)
                mean = param.detach().clone()
                if is_head:
                    mean[splits.forget_classes] = 0
                noise = torch.randn(param.shape, generator=generator).to(param)
                param.copy_(mean + var.sqrt() * noise)
