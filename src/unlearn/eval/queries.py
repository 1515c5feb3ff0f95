"""Input-space attacks on a served model, membership detection, and probes at every block of the network.

Two threat models beyond the feature-level attacks of `unlearn.eval.audit`:

- a *query attacker* sends any input to the served model and reads the features its head sees
  (`served(x) = edit(h(x))`): perturbed copies of one input, nearby points, points on a path between
  two inputs. What it learns from how the answer moves is added to what one answer tells.
- a *weight holder* has the released weights and reads the activations of every block of the feature
  extractor, not only the head's input.

Each family gives one attack feature per input. From it the attacker fits, on D_f ∪ D_r with their
labels (as for KR), a 10-way logistic regression (scored on D_ft / D_rt, like every other attack) and a
binary forget-vs-remain detector (membership: knowing that an input belongs to the forgotten class is
itself the leak), scored on D_ft ∪ D_rt by AUC and by the true-positive rate at 5 % false positives.
A retrained model never saw the forget class, so its membership scores are the reference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.preprocessing import StandardScaler
from torch import nn

from unlearn.config import AuditConfig
from unlearn.data.splits import ForgetSplits
from unlearn.eval.audit import logistic_attack
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_for_probe
from unlearn.runtime import module_device

QUERY_THREATS = {
    "jitter": "sends J copies x + σε (Gaussian ε, σ a fraction of the inputs' spread) of each input and reads "
    "the served features of each",
    "finite differences": "sends x and x + hδ for a few random directions δ and reads how far the served feature moves",
    "path": "sends points on the straight line from an input to one fixed remain input and reads how the served "
    "feature moves along it",
    "blocks": "has the released weights and reads the activations of every block of the feature extractor",
    "membership": "wants to know whether an input belongs to the forgotten class (a binary detector on the "
    "features of one attack family)",
}
FPR = 0.05  # membership: recall at this false-positive rate
SPLITS = ("D_f", "D_r", "D_ft", "D_rt")
Inputs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (inputs, labels)


def membership_scores(train_x: np.ndarray, train_forget: np.ndarray, test_x: np.ndarray, test_forget: np.ndarray):
    """A class-balanced logistic-regression detector of forget inputs: {"AUC", "TPR@5%FPR"} (%) on the test set."""
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(train_x), train_forget)
    score = clf.decision_function(scaler.transform(test_x))
    fpr, tpr, _ = roc_curve(test_forget, score)
    return {"AUC": float(100 * roc_auc_score(test_forget, score)), "TPR@5%FPR": float(100 * np.interp(FPR, fpr, tpr))}


def attack_family(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], forget: list[int], seed: int):
    """The 10-way logreg (D_ft / D_rt accuracy) and the membership detector on one family's features."""
    train_x = np.concatenate([features["D_f"], features["D_r"]])
    train_y = np.concatenate([labels["D_f"], labels["D_r"]])
    tests = {name: (features[name], labels[name]) for name in ("D_ft", "D_rt")}
    found = logistic_attack(train_x, train_y, tests, seed=seed)
    test_x = np.concatenate([features["D_ft"], features["D_rt"]])
    test_y = np.concatenate([labels["D_ft"], labels["D_rt"]])
    member = membership_scores(train_x, np.isin(train_y, forget), test_x, np.isin(test_y, forget))
    return found, member


def attacker_inputs(splits: ForgetSplits, max_train: int | None, seed: int, max_test: int | None = None) -> Inputs:
    """Inputs and labels of the four splits, to bound the queries: at most `max_train` samples of each training
    split and `max_test` of each test split (seeded draws; None: all)."""
    found = {}
    for name in SPLITS:
        x, y = collect_outputs(nn.Identity(), getattr(splits, name), 512)
        cap = max_test if name in ("D_ft", "D_rt") else max_train
        if cap is not None and len(x) > cap:
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:cap]
            x, y = x[keep], y[keep]
        found[name] = (x, y)
    return found


@torch.no_grad()
def served(model: nn.Module, x: torch.Tensor, head: str | None = None, batch: int = 512) -> torch.Tensor:
    """The features the head sees for inputs `x` (edit applied): what a served model gives out."""
    base, edit, _ = split_for_probe(model, head)
    base.eval()
    edit.eval()
    device = module_device(model)
    return torch.cat([edit(base(chunk.to(device)).flatten(1)).float().cpu() for chunk in x.split(batch)])


def repeated_features(model: nn.Module, x: torch.Tensor, copies: int, head: str | None = None) -> np.ndarray:
    """Mean and per-coordinate spread of `copies` queries of each input (input level; see `repeated_query_features`).

    Threat model repeated: a query attacker who sends one input again; a random router answers differently.
    """
    outs = torch.stack([served(model, x, head) for _ in range(copies)])
    return torch.cat([outs.mean(0), outs.std(0)], dim=1).numpy()


def jitter_features(model, x: torch.Tensor, sigma: float, copies: int, seed: int, head=None) -> np.ndarray:
    """Mean and per-coordinate spread of the served features of `copies` Gaussian copies x + σε.

    Threat model jitter: a query attacker who may perturb an input. A smooth map moves little and alike
    for every class; a map that jumps (a hash, a hard detector's boundary) or draws a random expert gives
    forget inputs a spread that remain inputs do not have.
    """
    generator = torch.Generator().manual_seed(seed)
    outs = torch.stack(
        [served(model, x + sigma * torch.randn(x.shape, generator=generator), head) for _ in range(copies)]
    )
    return torch.cat([outs.mean(0), outs.std(0)], dim=1).numpy()


def finite_difference_features(model, x: torch.Tensor, step: float, directions: int, seed: int, head=None):
    """The served feature f(x), with log mean and log max of |f(x + hδ) − f(x)| / h over random unit δ.

    Threat model finite differences: a query attacker who estimates the local sensitivity of the served
    features. A locally constant map (a hash) answers 0 or a jump; a remain input's sensitivity is the
    network's own.
    """
    generator = torch.Generator().manual_seed(seed)
    center = served(model, x, head)
    slopes = []
    for _ in range(directions):
        delta = torch.randn(x.shape, generator=generator)
        delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        slopes.append((served(model, x + step * delta, head) - center).norm(dim=1) / step)
    slopes = torch.stack(slopes, dim=1)
    stats = torch.stack([slopes.mean(1), slopes.max(1).values], dim=1).clamp_min(1e-8).log()
    return torch.cat([center, stats], dim=1).numpy()


def path_features(model, x: torch.Tensor, anchor: torch.Tensor, steps: int, head=None) -> np.ndarray:
    """f(x), then along x_t = (1 − t) x + t a (t = 0, 1/steps, .., 1) to one fixed remain input a: log of the
    path length, of the largest step over the median step, and of |f(x) − f(a)|.

    Threat model path: a query attacker who walks from an input to a known remain input. A smooth edit
    gives evenly spaced answers; a hard switch (a detector's boundary, a transplant) one large step.
    """
    outs = torch.stack([served(model, (1 - t) * x + t * anchor, head) for t in torch.linspace(0, 1, steps + 1)])
    gaps = (outs[1:] - outs[:-1]).norm(dim=2)  # steps x N
    stats = torch.stack(
        [gaps.sum(0), gaps.max(0).values / gaps.median(0).values.clamp_min(1e-8), (outs[0] - outs[-1]).norm(dim=1)],
        dim=1,
    )
    return torch.cat([outs[0], stats.clamp_min(1e-8).log()], dim=1).numpy()


def feature_blocks(features: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a feature extractor: its top-level children with parameters, after descending through
    wrappers that hold a single such child (a model's `trunk`, a `features` Sequential)."""
    prefix, module = "", features
    while True:
        children = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
        if len(children) != 1 or not any(True for _ in children[0][1].children()):
            return [(prefix + name, child) for name, child in children]
        prefix, module = f"{prefix}{children[0][0]}.", children[0][1]


@torch.no_grad()
def block_activations(model: nn.Module, x: torch.Tensor, head: str | None = None) -> dict[str, np.ndarray]:
    """Each block's output for inputs `x`, spatial maps average-pooled to 2 x 2 (C·4 values), flattened."""
    base = split_for_probe(model, head)[0].eval()
    blocks = feature_blocks(base)
    found: dict[str, list[torch.Tensor]] = {name: [] for name, _ in blocks}

    def keep(name):
        def hook(_module, _inputs, output):
            out = output.float()
            if out.dim() > 2:
                out = F.adaptive_avg_pool2d(out.flatten(0, -4) if out.dim() > 4 else out, 2)
            found[name].append(out.flatten(1).cpu().clone())  # clone: a later in-place ReLU must not change it

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in blocks]
    try:
        device = module_device(model)
        for chunk in x.split(512):
            base(chunk.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts).numpy() for name, parts in found.items()}


def query_audit(
    model: nn.Module, splits: ForgetSplits, settings: AuditConfig, seed: int = 0, head: str | None = None
) -> tuple[dict[str, dict], dict[str, dict]]:
    """The input-space query attacks and the every-block probes: ({attack: scores + threat}, {family: membership}).

    Membership is also scored on the model's output logits and on the served features of one query.
    """
    inputs = attacker_inputs(splits, settings.query_max_train, seed, settings.query_max_test)
    labels = {name: y.numpy() for name, (_, y) in inputs.items()}
    forget = splits.forget_classes
    spread = float(inputs["D_r"][0].std())
    anchor = inputs["D_r"][0][torch.randint(len(inputs["D_r"][0]), (1,), generator=torch.Generator().manual_seed(seed))]
    attacks, membership = {}, {}

    def family(name: str, threat: str, make) -> None:
        found, member = attack_family({split: make(x) for split, (x, _) in inputs.items()}, labels, forget, seed)
        attacks[f"{name}: logreg"] = {**found, "threat": threat}
        membership[name] = member

    with torch.no_grad():
        device = module_device(model)
        logits = {
            s: torch.cat([model.eval()(c.to(device)).cpu() for c in x.split(512)]) for s, (x, _) in inputs.items()
        }
    membership["model output"] = attack_family({s: v.numpy() for s, v in logits.items()}, labels, forget, seed)[1]
    membership["served features"] = attack_family(
        {s: served(model, x, head).numpy() for s, (x, _) in inputs.items()}, labels, forget, seed
    )[1]
    family(
        f"repeated {settings.query_copies}x",
        "repeated",
        lambda x: repeated_features(model, x, settings.query_copies, head),
    )
    sigma = settings.query_jitter * spread
    family(
        f"jitter {settings.query_copies}x σ={settings.query_jitter:g}",
        "jitter",
        lambda x: jitter_features(model, x, sigma, settings.query_copies, seed, head),
    )
    family(
        "finite differences",
        "finite differences",
        lambda x: finite_difference_features(
            model, x, settings.query_step * spread * np.sqrt(x[0].numel()), settings.query_directions, seed, head
        ),
    )
    family(
        f"path ({settings.query_path_steps} steps)",
        "path",
        lambda x: path_features(model, x, anchor.expand_as(x), settings.query_path_steps, head),
    )
    if settings.block_probes:
        blocks = {split: block_activations(model, x, head) for split, (x, _) in inputs.items()}
        worst = None
        for name in blocks["D_f"]:
            found, member = attack_family({s: blocks[s][name] for s in SPLITS}, labels, forget, seed)
            attacks[f"block {name}: logreg"] = {**found, "threat": "blocks"}
            worst = member if worst is None or member["AUC"] > worst["AUC"] else worst
        if worst is not None:
            membership["blocks (best)"] = worst
    return attacks, membership
