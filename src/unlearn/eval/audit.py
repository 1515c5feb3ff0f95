"""Irreversibility audit: attacks that try to get a forgotten class back from an unlearned model.

Every attack returns {"D_ft": forget-test accuracy, "D_rt": remain-test accuracy} in percent, measured on
test samples the attacker never saw; each docstring states its threat model (`THREATS` names them).
Features are those the head sees (after the edit, stochastic layers active, one fresh pass per query),
so the same code audits a feature edit, a retrained or a finetuned model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from unlearn.config import AuditConfig
from unlearn.data.base import LabeledConcat, LabeledSubset
from unlearn.data.splits import ForgetSplits
from unlearn.errors import UnlearnError
from unlearn.eval.kr import FeatureSet, probe, split_features
from unlearn.eval.metrics import accuracy
from unlearn.methods.base import linear_matrix
from unlearn.models.inference import collect_outputs
from unlearn.models.split import split_for_probe
from unlearn.models.train import TrainConfig, train
from unlearn.runtime import module_device

THREATS = {
    "KR": "queries the unlearned features (edit active) and knows the labels of D_f ∪ D_r",
    "few-shot": "queries the unlearned features and knows the labels of D_r and of a few forget samples",
    "repeated": "queries the unlearned features of each input several times (KR labels)",
    "white-box edit": "knows the edit's weights and the head, sees only edited features",
    "relearn": "has the released unlearned model's weights (edit kept in place) and a few labelled forget samples",
    "bypass": "has the released weights and drops the edit layer (feature edits only)",
}

PINV_RTOL = 1e-5  # edits are float32: singular values below this fraction of the largest are rounding noise
Tests = dict[str, tuple[np.ndarray, np.ndarray]]  # split name -> (features, labels)


def _scores(predict, tests: Tests) -> dict[str, float]:
    """Accuracy (percent) of the class ids `predict` gives on each test split; a forget sample counts when its
    true class comes back."""
    return {name: float(100.0 * (predict(x) == y).mean()) if len(y) else float("nan") for name, (x, y) in tests.items()}


def kr_attack(features: FeatureSet, edit: nn.Module, num_classes: int, lr: float, epochs: int, seed: int) -> dict:
    """The paper's KR (MoRE §B.3): a linear head, SGD `lr`, `epochs` epochs, on frozen edited features of D_f ∪ D_r.

    Threat model KR. Reuses `unlearn.eval.kr.probe` (the stochastic edit runs again on every batch).
    """
    accs = probe(features[0], features[1], edit, num_classes, lr, epochs, seed=seed)["acc"]
    return {"D_ft": accs["D_ft"], "D_rt": accs["D_rt"]}


def logistic_attack(train_x: np.ndarray, train_y: np.ndarray, tests: Tests, max_iter: int = 2000, seed: int = 0):
    """A converged multinomial logistic regression (L2, C = 1, lbfgs) on standardised features.

    Threat model KR (or few-shot with a smaller forget part of the training set): the best linear probe,
    unlike KR's 10 SGD epochs, which stop before convergence.
    """
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=max_iter, random_state=seed).fit(scaler.transform(train_x), train_y)
    return _scores(lambda x: clf.predict(scaler.transform(x)), tests)


def mlp_attack(
    train_x: np.ndarray, train_y: np.ndarray, tests: Tests, hidden: tuple[int, ...], max_epochs: int, seed: int = 0
) -> dict:
    """A ReLU MLP (Adam, `hidden` layer sizes) on standardised features, early stopping on a 10 % validation split.

    Threat model KR / few-shot: a non-linear probe, which reads what the edit left outside the directions
    a linear head uses (the residual of a forget feature around its remap target).
    """
    scaler = StandardScaler().fit(train_x)
    clf = MLPClassifier(
        hidden_layer_sizes=hidden, early_stopping=True, validation_fraction=0.1, max_iter=max_epochs, random_state=seed
    ).fit(scaler.transform(train_x), train_y)
    return _scores(lambda x: clf.predict(scaler.transform(x)), tests)


def knn_attack(train_x: np.ndarray, train_y: np.ndarray, tests: Tests, k: int, metric: str) -> dict:
    """k-nearest-neighbour vote over the labelled training features (`metric` euclidean or cosine).

    Threat model KR / few-shot: needs no training at all; recovers a class whose edited features still
    sit closer to each other than to the class they were remapped to.
    """
    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric=metric).fit(train_x, train_y)
    return _scores(clf.predict, tests)


def nearest_distance_attack(train_x: np.ndarray, train_y: np.ndarray, tests: Tests, max_iter: int, seed: int = 0):
    """Logistic regression on the features plus log distance to the nearest (other) training feature.

    Threat model KR: an edit that sends forget samples onto stored or collapsed points gives them outputs
    that (nearly) coincide with training features, which real test samples never do; this attack reads that.
    """

    def with_distance(x: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.log(distance[:, None] + 1e-6)], axis=1)

    index = NearestNeighbors(n_neighbors=2).fit(train_x)
    own = with_distance(train_x, index.kneighbors(train_x)[0][:, 1])  # the nearest point other than itself
    moved = {name: (with_distance(x, index.kneighbors(x, 1)[0][:, 0]), y) for name, (x, y) in tests.items()}
    return logistic_attack(own, train_y, moved, max_iter, seed)


@torch.no_grad()
def edited(edit: nn.Module, base: torch.Tensor, passes: int = 1) -> torch.Tensor:
    """`passes` independent queries of the edit on each row of `base` (passes x N x d); one pass per call."""
    edit.eval()
    return torch.stack([torch.cat([edit(chunk).cpu() for chunk in base.split(1024)]) for _ in range(passes)])


def repeated_query_features(edit: nn.Module, base: torch.Tensor, passes: int, spread: bool) -> np.ndarray:
    """Mean of `passes` queries of each input, with their per-coordinate standard deviation when `spread`.

    Threat model repeated: an attacker who may send the same input again. For a stochastic router the mean
    undoes the random choice of expert, and the spread of the answers is (P_t − P_t') m_f: large exactly
    for forget samples. A deterministic edit answers the same every time (spread 0, mean = one pass).
    """
    stack = edited(edit, base, passes)
    parts = [stack.mean(0)] + ([stack.std(0)] if spread else [])
    return torch.cat(parts, dim=1).numpy()


def edit_matrix(edit: nn.Module) -> torch.Tensor | None:
    """The d x d matrix an attacker reads from a linear edit's weights; for a stochastic MoRE layer the mean
    of its expert matrices (what the mean of many passes applies); None for a non-linear edit."""
    matrix = linear_matrix(edit)
    if matrix is None and callable(getattr(edit, "experts", None)):
        matrix = edit.experts().mean(0)
    return matrix


@torch.no_grad()
def inversion_attack(edit: nn.Module, head: nn.Module, tests: dict[str, tuple[torch.Tensor, torch.Tensor]], passes):
    """Undo a linear edit: ẑ ↦ E⁺ ẑ, then the released head g; None when the edit is not linear.

    Threat model white-box edit: the attacker has E (from the edit's weights) and g, and sees edited
    features (averaged over `passes` queries, which turns a stochastic MoRE into its mean expert matrix).
    When E is invertible this gives back h(x) exactly and the Original's accuracy; a projection (Erase,
    ESC, PO Remap) is singular, and E⁺ recovers only what E kept. Also returns the condition number of E.
    """
    matrix = edit_matrix(edit)
    if matrix is None:
        return None
    matrix = matrix.double().cpu()
    inverse = torch.linalg.pinv(matrix, rtol=PINV_RTOL)
    scores = {}
    for name, (base, labels) in tests.items():
        z = edited(edit, base, passes).mean(0).double()
        logits = torch.cat([head((chunk @ inverse.T).float().to(module_device(head))).cpu() for chunk in z.split(1024)])
        scores[name] = accuracy(logits, labels)
    sigma = torch.linalg.svdvals(matrix)
    singular = bool(sigma.min() <= PINV_RTOL * sigma.max())
    return {**scores, "condition": float("inf") if singular else float(sigma.max() / sigma.min())}


def bypass_attack(head: nn.Module, tests: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Drop the edit layer: g(h(x)) with the released trunk h and head g (feature edits only).

    Threat model bypass: a feature edit leaves h and g as they were, so whoever has the weights can
    skip it; this is the Original's accuracy for every feature edit, and why an edit protects a served
    model (features or predictions behind an API), not released weights.
    """
    with torch.no_grad():
        return {
            name: accuracy(torch.cat([head(c.to(module_device(head))).cpu() for c in base.split(1024)]), labels)
            for name, (base, labels) in tests.items()
        }


def reset_forget_rows(model: nn.Module, forget_classes: list[int], head: str | None = None) -> None:
    """Set the head's forget-class rows (weight and bias) to the mean of its remain rows, in place.

    A weight holder can do this before relearning: it undoes any suppression of the forget logit itself,
    so what relearning then recovers comes from the features.
    """
    classifier = split_for_probe(model, head)[2]
    if not isinstance(classifier, nn.Linear):
        raise UnlearnError(f"resetting the forget rows needs a linear head, got {type(classifier).__name__}.")
    remain = [row for row in range(classifier.out_features) if row not in forget_classes]
    with torch.no_grad():
        for param in (classifier.weight, classifier.bias):
            if param is not None:
                param[forget_classes] = param[remain].mean(dim=0)


def relearn_attack(
    model: nn.Module,
    splits: ForgetSplits,
    settings: AuditConfig,
    seed: int = 0,
    head: str | None = None,
    samples: int | None = None,
    reset_head: bool = False,
) -> dict[str, dict]:
    """Finetune the whole unlearned model (edit kept, its buffers fixed) on a few labelled forget samples.

    Threat model relearn: `samples` (default `relearn_samples`) forget samples from D_f plus as many remain
    samples from D_r,
    plain SGD (momentum 0.9, no weight decay) with the one training loop, for each cumulative epoch budget;
    scored on D_ft and D_rt, which the attacker never saw. Retrain under the same attack is the yardstick
    for how fast a never-seen class is learned. `reset_head` first sets the head's forget rows to the mean
    of its remain rows (`reset_forget_rows`).
    """
    samples = settings.relearn_samples if samples is None else samples
    if samples < 1 or not settings.relearn_epochs:
        return {}
    generator = torch.Generator().manual_seed(seed)
    forget = torch.randperm(len(splits.D_f), generator=generator)[:samples]
    remain = torch.randperm(len(splits.D_r), generator=generator)[:samples]
    data = LabeledConcat([LabeledSubset(splits.D_f, forget), LabeledSubset(splits.D_r, remain)])
    student = copy.deepcopy(model)
    if reset_head:
        reset_forget_rows(student, splits.forget_classes, head)
    results, done = {}, 0
    for budget in sorted(settings.relearn_epochs):
        recipe = TrainConfig(
            epochs=budget - done,
            lr=settings.relearn_lr,
            batch_size=settings.relearn_batch_size,
            weight_decay=0.0,
            schedule="constant",
            warmup_epochs=0,
            seed=seed + budget,
        )
        train(student, data, recipe, progress=False, desc="relearn")
        done = budget
        steps = budget * -(-len(data) // settings.relearn_batch_size)
        name = (
            f"relearn {steps} steps" if samples == settings.relearn_samples else f"relearn k={samples}, {steps} steps"
        )
        results[name] = {
            name: accuracy(*collect_outputs(student, getattr(splits, name), 512)) for name in ("D_ft", "D_rt")
        }
    return results


def few_shot_indices(num_forget: int, budget: float, seed: int) -> torch.Tensor:
    """Indices of the attacker's labelled forget samples: a fraction (< 1) or a count of D_f, seeded."""
    count = int(round(budget * num_forget)) if budget < 1 else int(budget)
    if count < 1:
        raise UnlearnError(f"few_shot budget {budget} leaves no forget sample of {num_forget}; raise it.")
    return torch.randperm(num_forget, generator=torch.Generator().manual_seed(seed))[: min(count, num_forget)]


def probe_subsample(sizes: dict[str, int], cap: int | None, seed: int) -> dict[str, torch.Tensor]:
    """Row indices of each training split the probes learn from: all of them, or with `cap`, a seeded draw of at
    most `cap` rows in all, each split keeping its share (at least one row each), so the forget/remain mix and
    the probes' cost stay those of `cap` samples on a large training set."""
    total = sum(sizes.values())
    if cap is None or total <= cap:
        return {name: torch.arange(size) for name, size in sizes.items()}
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randperm(size, generator=generator)[: max(1, round(cap * size / total))].sort().values
        for name, size in sizes.items()
    }


def feature_probes(
    train_x: np.ndarray, train_y: np.ndarray, tests: Tests, settings: AuditConfig, seed: int, prefix: str = ""
) -> dict[str, dict]:
    """The probes that only need labelled features: logistic regression, MLPs, k-NN, nearest-distance test."""
    results = {f"{prefix}logreg": logistic_attack(train_x, train_y, tests, settings.logreg_max_iter, seed)}
    for hidden in settings.mlp_hidden:
        name = f"{prefix}MLP {'x'.join(str(h) for h in hidden)}"
        results[name] = mlp_attack(train_x, train_y, tests, tuple(hidden), settings.mlp_max_epochs, seed)
    for metric in settings.knn_metrics:
        for k in settings.knn_ks:
            results[f"{prefix}{k}-NN {metric}"] = knn_attack(train_x, train_y, tests, k, metric)
    found = nearest_distance_attack(train_x, train_y, tests, settings.logreg_max_iter, seed)
    results[f"{prefix}logreg + nearest-train distance"] = found
    return results


def audit_model(
    model: nn.Module,
    splits: ForgetSplits,
    settings: AuditConfig,
    seed: int = 0,
    head: str | None = None,
    base: FeatureSet | None = None,
) -> dict[str, dict]:
    """Every attack on one model: {attack: {"D_ft", "D_rt", "threat"}} (attacks that do not apply are left out).

    `base` may pass the features before the model's edit (shared by every edit of one Original model).
    """
    if not splits.forget_classes:
        raise UnlearnError("the audit needs a class-wise task (forget_classes); a sample-wise split has no D_ft.")
    torch.manual_seed(seed)
    base_module, edit, head_module = split_for_probe(model, head)
    features = base if base is not None else split_features(base_module, splits)
    values, labels = features
    results: dict[str, dict] = {}

    def add(threat: str, found: dict[str, dict]) -> None:
        results.update({name: {**scores, "threat": threat} for name, scores in found.items()})

    add(
        "KR",
        {
            f"KR lr={lr:g}": kr_attack(features, edit, splits.num_classes, lr, settings.kr_epochs, seed)
            for lr in settings.kr_lrs
        },
    )
    kept = probe_subsample({name: len(values[name]) for name in ("D_f", "D_r")}, settings.probe_max_train, seed)
    train_base = {name: values[name][keep] for name, keep in kept.items()}
    train_labels = {name: labels[name][keep].numpy() for name, keep in kept.items()}
    tests = {name: (edited(edit, values[name])[0].numpy(), labels[name].numpy()) for name in ("D_ft", "D_rt")}
    train_z = {name: edited(edit, train_base[name])[0].numpy() for name in train_base}
    train_x = np.concatenate([train_z["D_f"], train_z["D_r"]])
    train_y = np.concatenate([train_labels["D_f"], train_labels["D_r"]])
    add("KR", feature_probes(train_x, train_y, tests, settings, seed))
    for budget in settings.few_shot:
        keep = few_shot_indices(len(train_z["D_f"]), budget, seed).numpy()
        x = np.concatenate([train_z["D_f"][keep], train_z["D_r"]])
        y = np.concatenate([train_labels["D_f"][keep], train_labels["D_r"]])
        add("few-shot", feature_probes(x, y, tests, settings, seed, prefix=f"few-shot {len(keep)}: "))
    if settings.passes > 1:
        train_all = torch.cat([train_base["D_f"], train_base["D_r"]])
        for spread, name in ((False, "mean"), (True, "mean+spread")):
            repeated_x = repeated_query_features(edit, train_all, settings.passes, spread)
            repeated_tests = {
                split: (repeated_query_features(edit, values[split], settings.passes, spread), labels[split].numpy())
                for split in ("D_ft", "D_rt")
            }
            found = logistic_attack(repeated_x, train_y, repeated_tests, settings.logreg_max_iter, seed)
            add("repeated", {f"{settings.passes} queries, {name}: logreg": found})
    test_base = {name: (values[name], labels[name]) for name in ("D_ft", "D_rt")}
    if not isinstance(edit, nn.Identity):
        inverted = inversion_attack(edit, head_module, test_base, settings.passes)
        if inverted is not None:
            add("white-box edit", {"inversion E⁺": inverted})
        add("bypass", {"edit removed": bypass_attack(head_module, test_base)})
    for samples in dict.fromkeys([settings.relearn_samples, *settings.relearn_curve_samples]):
        add("relearn", relearn_attack(model, splits, settings, seed, head, samples))
    return results


def worst_case(attacks: dict[str, dict], exclude_threats: tuple[str, ...] = ()) -> tuple[str, float]:
    """The attack with the highest forget-test accuracy (and that accuracy), over threats not excluded."""
    kept = {name: scores["D_ft"] for name, scores in attacks.items() if scores["threat"] not in exclude_threats}
    if not kept:
        raise UnlearnError("no attack left to take the worst case over.")
    name = max(kept, key=kept.get)
    return name, kept[name]
