"""Look-alike classes on Fashion-MNIST (issue 16, item 3): why MoRE/Remap cost remain accuracy, and the fix.

A small CNN (DigitsCNN, width 16, 64-d features) is trained once on a random 12 000-image subset of the
Fashion-MNIST training set (`load_fashion_mnist(train_size=12000, seed=0)`; cached under runs/lookalike/);
every edit then runs on the cached penultimate features of the training set and the full 10 000-image test
set, so each idea costs seconds.

    OMP_NUM_THREADS=1 nice -n 10 python bench/lookalike.py diagnose   # lookalike_diagnosis.{json,md}
    OMP_NUM_THREADS=1 nice -n 10 python bench/lookalike.py ideas      # lookalike_ideas.{json,md}
    OMP_NUM_THREADS=1 nice -n 10 python bench/lookalike.py sweep --model-seed 1   # another model: 10 requests

Both are resumable: finished cells are kept in runs/lookalike/cells.json and read back.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from unlearn.data.base import LabeledTensors
from unlearn.data.idx import FASHION_MNIST_CLASSES, load_fashion_mnist
from unlearn.io import atomic_path, atomic_write_json, atomic_write_text
from unlearn.models.inference import collect_outputs
from unlearn.models.small_cnn import DigitsCNN
from unlearn.models.train import TrainConfig, train_cached

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "lookalike"
RESULTS = ROOT / "bench" / "results"
CLASSES = FASHION_MNIST_CLASSES
TRAIN_SUBSET = 12_000
RECIPE = TrainConfig(epochs=5, lr=0.05, batch_size=128, seed=0)


def run_dir(seed: int) -> Path:
    """Cache folder of the model with this seed (seed 0 directly under runs/lookalike/)."""
    return RUNS if seed == 0 else RUNS / f"seed{seed}"


def features(seed: int = 0) -> dict[str, torch.Tensor]:
    """Train the CNN once (cached), then its penultimate features and labels of both splits (cached).

    `seed` draws the training subset and seeds the training run.
    """
    path = run_dir(seed) / "features.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    data = load_fashion_mnist(train_size=TRAIN_SUBSET, seed=seed)
    train, test = data.train, data.test
    start = time.time()
    model, cached = train_cached(
        lambda: DigitsCNN(10, 1, width=16, feature_dim=64),
        train,
        replace(RECIPE, seed=seed),
        run_dir(seed),
        {"data": "fashion_mnist", "train_size": TRAIN_SUBSET, "model": "DigitsCNN-16-64"},
        torch.device("cpu"),
        desc="fashion-cnn",
    )
    train_s = time.time() - start
    out = {"train_s": torch.tensor(train_s), "cached": torch.tensor(cached), "seed": torch.tensor(seed)}
    for split, data in (("train", train), ("test", test)):
        out[f"z_{split}"], out[f"y_{split}"] = collect_outputs(model.trunk, data, 512)
    for name, value in model.fc.state_dict().items():
        out[f"fc.{name}"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return out


# ----------------------------------------------------------------------------------------------------------
# Shared pieces: the head, the splits as features, and scoring an edit (output level and KR at lr 0.1)


def head_of(feats: dict[str, torch.Tensor]) -> torch.nn.Linear:
    head = torch.nn.Linear(feats["z_train"].shape[1], 10)
    head.load_state_dict({"weight": feats["fc.weight"], "bias": feats["fc.bias"]})
    return head.eval().requires_grad_(False)


def split_sets(feats: dict[str, torch.Tensor], forget: list[int]) -> tuple[dict, dict]:
    """D_f, D_r, D_ft, D_rt as (features, labels) dicts, the input of `unlearn.eval.kr.probe`."""
    values, labels = {}, {}
    for split, (f_name, r_name) in (("train", ("D_f", "D_r")), ("test", ("D_ft", "D_rt"))):
        z, y = feats[f"z_{split}"], feats[f"y_{split}"]
        is_forget = torch.isin(y, torch.tensor(forget))
        values[f_name], labels[f_name] = z[is_forget], y[is_forget]
        values[r_name], labels[r_name] = z[~is_forget], y[~is_forget]
    return values, labels


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor) -> dict[int, float]:
    return {c: round(100.0 * float((pred[y == c] == c).float().mean()), 2) for c in range(10)}


def confusion(pred: torch.Tensor, y: torch.Tensor) -> list[list[int]]:
    """10 x 10 counts, row = true class, column = predicted class."""
    return torch.bincount(y * 10 + pred, minlength=100).view(10, 10).tolist()


@torch.no_grad()
def output_scores(edit: torch.nn.Module, head: torch.nn.Module, feats: dict, forget: list[int]) -> dict:
    """Accuracies (D_ft, D_rt, per class on the test set) of head(edit(z)), and the test predictions."""
    edit.eval()
    torch.manual_seed(0)
    pred = head(edit(feats["z_test"])).argmax(1)
    y = feats["y_test"]
    is_forget = torch.isin(y, torch.tensor(forget))
    return {
        "D_ft": round(100.0 * float((pred[is_forget] == y[is_forget]).float().mean()), 2),
        "D_rt": round(100.0 * float((pred[~is_forget] == y[~is_forget]).float().mean()), 2),
        "per_class": per_class_accuracy(pred, y),
        "pred": pred,
    }


def kr_scores(edit: torch.nn.Module, feats: dict, forget: list[int], lr: float = 0.1) -> dict:
    """KR at one probe lr (unlearn.eval.kr.probe: fresh linear head, 10 epochs, batch 64, seed 0)."""
    from unlearn.eval.kr import probe

    values, labels = split_sets(feats, forget)
    result = probe(values, labels, edit, 10, lr)
    return {name: round(value, 2) for name, value in result["acc"].items()}


# ----------------------------------------------------------------------------------------------------------
# Diagnosis: the forget coordinate m_f of remain test samples, and where the remapped ones go

DIAGNOSE_CLASSES = (6, 0, 1)


def fit_edit(method, feats: dict, forget: list[int], **fit_kwargs):
    """Fit a library feature edit on the cached training features (the extractor is the identity here)."""
    return method.fit(torch.nn.Identity(), LabeledTensors(feats["z_train"], feats["y_train"]), forget, 10, **fit_kwargs)


def quantiles(values: torch.Tensor) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = torch.quantile(values.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "mean": round(float(values.mean()), 3),
        "p10": round(float(q[0]), 3),
        "median": round(float(q[1]), 3),
        "p90": round(float(q[2]), 3),
        "frac_gt_0.25": round(float((values > 0.25).float().mean()), 3),
        "frac_gt_0.5": round(float((values > 0.5).float().mean()), 3),
        "frac_lt_0": round(float((values < 0).float().mean()), 3),
    }


def diagnose_class(feats: dict, forget: int) -> dict:
    from unlearn.methods import Erase, MoRE, Remap

    head = head_of(feats)
    z, y = feats["z_test"], feats["y_test"]
    original = head(z).argmax(1)
    more = fit_edit(MoRE(num_experts=8, seed=0), feats, [forget])
    protos = more.prototypes.matrix
    m_f = (z @ more.layer.coords.T)[:, 0]
    unit = protos / protos.norm(dim=0, keepdim=True)
    cosine = (unit.T @ unit)[forget]
    out = {
        "forget": forget,
        "prototype_cosine_to_forget": {c: round(float(cosine[c]), 3) for c in range(10)},
        "m_f_by_class": {c: quantiles(m_f[y == c]) for c in range(10)},
        "original_per_class": per_class_accuracy(original, y),
        "methods": {},
    }
    remap = fit_edit(Remap(seed=0), feats, [forget])
    out["targets"] = {"MoRE": more.layer.targets[:, 0].tolist(), "Remap": remap.layer.targets[:, 0].tolist()}
    for name, edit in (("MoRE", more), ("Remap", remap), ("Erase", fit_edit(Erase(), feats, [forget]))):
        scores = output_scores(edit.layer, head, feats, [forget])
        pred = scores.pop("pred")
        remain = y != forget
        flipped = remain & (original == y) & (pred != y)
        fixed = remain & (original != y) & (pred == y)
        out["methods"][name] = {
            **scores,
            "remain_flipped": int(flipped.sum()),
            "remain_fixed": int(fixed.sum()),
            "flips_by_true_class": torch.bincount(y[flipped], minlength=10).tolist(),
            "flips_to_class": torch.bincount(pred[flipped], minlength=10).tolist(),
            "m_f_of_flipped": quantiles(m_f[flipped]),
            "m_f_of_kept": quantiles(m_f[remain & (original == y) & (pred == y)]),
            "forget_test_goes_to": torch.bincount(pred[y == forget], minlength=10).tolist(),
            "confusion_before": confusion(original, y),
            "confusion_after": confusion(pred, y),
        }
    return out


DIAGNOSIS_READING = [  # written after reading the tables above (seed 0); the numbers stay in the tables
    "Reading (run of this commit):",
    "",
    "- The remain loss comes from remapping, not from erasing: Erase alone keeps or raises D_rt, while MoRE and "
    "Remap lose it.",
    "- The flipped remain samples are those with a large positive m_f (their median m_f is about 0.66-0.72 when "
    "forgetting Shirt, against about 0 for the samples kept right): MoRE moves them by m_f (P_t − P_f), and they "
    "land on the remap targets (Remap: mostly on its one target, Ankle boot).",
    "- Look-alike classes hold many more such samples: with Shirt forgotten, about a third of the T-shirt/top, "
    "Pullover and Coat test samples have m_f > 0.25. No threshold on m_f separates them from the forget "
    "samples (forgetting Shirt: 10 % of the Shirt test samples have m_f below 0.03, while 10 % of the T-shirt, "
    "Pullover and Coat ones have m_f above 0.66), so a gate on m_f alone cannot fix it (see "
    "lookalike_ideas.md, idea a1).",
    "- With Shirt or T-shirt/top forgotten, Erase's few flips have a negative m_f: subtracting P_f m_f then adds "
    "the forget prototype, and they land on "
    "the forget class or its look-alike.",
    "- Trouser (distinct) is the control: its remain samples have m_f near 0 and MoRE, Remap and Erase leave "
    "D_rt within 0.15 point.",
]


def diagnosis_findings(result: dict) -> list[str]:
    """One measured sentence per forget class and method (no hand-written numbers)."""
    lines = []
    for cell in result["classes"]:
        f = cell["forget"]
        cos = cell["prototype_cosine_to_forget"]
        alike = sorted((c for c in range(10) if c != f), key=lambda c: -cos[c])[:3]
        q = cell["m_f_by_class"]
        share = ", ".join(f"{CLASSES[c]} {100 * q[c]['frac_gt_0.25']:.0f} %" for c in alike)
        others = [c for c in range(10) if c != f and c not in alike]
        rest = sum(q[c]["frac_gt_0.25"] for c in others) / len(others)
        lines.append(
            f"- Forget {CLASSES[f]}: remain test samples with m_f > 0.25 — its three most similar classes "
            f"(prototype cosine): {share}; the other six: {100 * rest:.0f} % on average."
        )
        for m in ("MoRE", "Remap", "Erase"):
            r = cell["methods"][m]
            flips = r["remain_flipped"]
            from_alike = sum(r["flips_by_true_class"][c] for c in alike)
            if flips:
                lines.append(
                    f"  - {m}: {flips} remain test samples go right → wrong ({r['remain_fixed']} wrong → right); "
                    f"{from_alike} of them ({100 * from_alike / flips:.0f} %) from those three classes; median m_f "
                    f"{r['m_f_of_flipped']['median']:.2f} for the flipped ones, {r['m_f_of_kept']['median']:.2f} "
                    "for those kept right."
                )
            else:
                lines.append(f"  - {m}: no remain test sample goes right → wrong ({r['remain_fixed']} wrong → right).")
    return lines


def diagnosis_markdown(result: dict) -> str:
    lines = [
        "# Look-alike classes on Fashion-MNIST: why MoRE/Remap cost remain accuracy",
        "",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python bench/lookalike.py diagnose`. Model: {result['model']}.",
        "m_f is the coefficient of a test sample on the forget prototype in MoRE's prototype basis "
        "(m = P⁺ z, PO on): 1 at the forget prototype, 0 at every remain prototype.",
        "",
    ]
    for cell in result["classes"]:
        f = cell["forget"]
        lines += [
            f"## Forget {CLASSES[f]} ({f})",
            "",
            "Remap target (seed 0): "
            f"{CLASSES[cell['targets']['Remap'][0]]}; MoRE's 8 experts: "
            + ", ".join(CLASSES[t] for t in cell["targets"]["MoRE"])
            + ".",
            "",
        ]
        lines += [
            "| class | cos(P_c, P_f) | m_f mean | m_f median | m_f p90 | m_f > 0.25 | m_f > 0.5 | Original | "
            "MoRE | Remap | Erase |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in range(10):
            q = cell["m_f_by_class"][c]
            accs = [cell["original_per_class"][c]] + [
                cell["methods"][m]["per_class"][c] for m in ("MoRE", "Remap", "Erase")
            ]
            lines.append(
                f"| {c} {CLASSES[c]}{' (forget)' if c == f else ''} | {cell['prototype_cosine_to_forget'][c]:.2f} | "
                f"{q['mean']:.3f} | {q['median']:.3f} | {q['p90']:.3f} | {100 * q['frac_gt_0.25']:.1f}% | "
                f"{100 * q['frac_gt_0.5']:.1f}% | " + " | ".join(f"{a:.1f}" for a in accs) + " |"
            )
        lines += [
            "",
            "| method | D_ft | D_rt | remain flipped right→wrong | fixed wrong→right | flips go to | "
            "median m_f flipped / kept |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in ("MoRE", "Remap", "Erase"):
            r = cell["methods"][m]
            to = ranked(r["flips_to_class"])
            lines.append(
                f"| {m} | {r['D_ft']:.1f} | {r['D_rt']:.2f} | {r['remain_flipped']} | {r['remain_fixed']} | {to} | "
                f"{r['m_f_of_flipped'].get('median', float('nan')):.3f} / {r['m_f_of_kept']['median']:.3f} |"
            )
        goes = cell["methods"]["Remap"]["forget_test_goes_to"]
        lines += [
            "",
            "Remap sends the forget test samples to: " + ranked(goes) + ".",
            "",
        ]
    lines += ["## Findings", "", *result["findings"], "", *DIAGNOSIS_READING, ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Ideas: each is MoRE's remap ẑ = z + g(z) (P_t^(e) − P_f) φ(m_f) with one piece changed


def gls_coordinates(protos: torch.Tensor, cov: torch.Tensor, shrink: float = 0.1) -> torch.Tensor:
    """m = (Pᵀ S⁻¹ P)⁻¹ Pᵀ S⁻¹ z with S = cov + shrink·tr(cov)/d·I: PO under a covariance; still D P = I."""
    d = len(cov)
    s = cov.double() + shrink * torch.trace(cov.double()) / d * torch.eye(d, dtype=torch.float64)
    p = protos.double()
    s_inv_p = torch.linalg.solve(s, p)
    return torch.linalg.solve(p.T @ s_inv_p, s_inv_p.T).float()  # k x d


def class_covariances(z: torch.Tensor, y: torch.Tensor) -> dict[int, torch.Tensor]:
    return {c: torch.cov(z[y == c].double().T) for c in range(10)}


class IdeaEdit(torch.nn.Module):
    """ẑ = z + g(z) (P_t^(e) − P_f) φ(m_f), m_f = D_f z, with a random expert e per sample (as MoRE).

    gate g: "none" (1, plain MoRE), "head" (argmax head(z) ∈ F), "coord" (clamp((m_f − lo)/(hi − lo), 0, 1)),
    "head_or_coord" (the larger of the two), "head_erase" (head gate; ungated samples get −P_f m_f⁺).
    φ: "none", "clip" (m_f⁺) or "shrink" ((m_f − λ)⁺ / (1 − λ)).
    """

    def __init__(self, protos, coords, forget, targets, head, gate="none", phi="none", lo=0.25, hi=0.5, lam=0.3):
        super().__init__()
        self.protos, self.coords, self.forget, self.targets, self.head = protos, coords, forget, targets, head
        self.gate, self.phi, self.lo, self.hi, self.lam = gate, phi, lo, hi, lam
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m_f = z @ self.coords.T  # B x |F|
        used = {"none": m_f, "clip": m_f.clamp_min(0), "shrink": (m_f - self.lam).clamp_min(0) / (1 - self.lam)}[
            self.phi
        ]
        experts = torch.randint(len(self.targets), (len(z),), generator=self.generator)
        p_t = self.protos.T[self.targets[experts]]  # B x |F| x d
        p_f = self.protos.T[self.forget]  # |F| x d
        correction = torch.einsum("bf,bfd->bd", used, p_t - p_f[None])
        detected = torch.isin(self.head(z).argmax(1), torch.tensor(self.forget)).float()
        soft = ((m_f.max(1).values - self.lo) / (self.hi - self.lo)).clamp(0, 1)
        if self.gate == "none":
            return z + correction
        if self.gate == "head_erase":
            erase = -m_f.clamp_min(0) @ p_f
            return torch.where(detected[:, None] > 0, z + correction, z + erase)
        g = {"head": detected, "coord": soft, "head_or_coord": torch.maximum(detected, soft)}[self.gate]
        return z + g[:, None] * correction


def remain_targets(protos: torch.Tensor, forget: int, rule: str, num_experts: int = 8) -> torch.Tensor:
    """N_e x 1 target columns: "random" (MoRE's seeded draw), "nearest"/"farthest" remain prototype by cosine,
    or "distant" (uniform over the half of the remain classes least similar to P_f)."""
    from unlearn.methods.more import draw_targets

    remain = [c for c in range(protos.shape[1]) if c != forget]
    unit = protos / protos.norm(dim=0, keepdim=True)
    cosine = (unit.T @ unit)[forget, remain]
    order = [remain[i] for i in cosine.argsort().tolist()]  # least similar first
    if rule == "random":
        return draw_targets(1, remain, num_experts, torch.Generator().manual_seed(0))
    if rule == "nearest":
        return torch.full((1, 1), order[-1])
    if rule == "farthest":
        return torch.full((1, 1), order[0])
    distant = order[: len(order) // 2]
    return draw_targets(1, distant, num_experts, torch.Generator().manual_seed(0))


IDEAS = {  # name -> (gate, φ, targets, coordinates)
    "MoRE (bench re-implementation)": ("none", "none", "random", "PO"),
    "a1 gate by m_f (soft, 0.25..0.5)": ("coord", "none", "random", "PO"),
    "a2 gate by head (as MoRE-T)": ("head", "none", "random", "PO"),
    "a3 gate by head or m_f": ("head_or_coord", "none", "random", "PO"),
    "a4 gate by head, erase the rest": ("head_erase", "none", "random", "PO"),
    "b1 clip m_f >= 0": ("none", "clip", "random", "PO"),
    "b2 shrink m_f (λ=0.3)": ("none", "shrink", "random", "PO"),
    "c1 target = nearest remain class": ("none", "none", "nearest", "PO"),
    "c2 target = farthest remain class": ("none", "none", "farthest", "PO"),
    "c3 targets = distant half": ("none", "none", "distant", "PO"),
    "d1 PO with pooled within-class covariance": ("none", "none", "random", "pooled"),
    "d2 PO with the forget class's covariance": ("none", "none", "random", "forget_cov"),
    "a2+b1 head gate, clip": ("head", "clip", "random", "PO"),
    "a3+b1 head or m_f gate, clip": ("head_or_coord", "clip", "random", "PO"),
    "a3+b1+c3 head or m_f gate, clip, distant": ("head_or_coord", "clip", "distant", "PO"),
}


def idea_edit(feats: dict, forget: int, spec: tuple[str, str, str, str]) -> torch.nn.Module:
    from unlearn.methods.more import pinv_svd

    gate, phi, rule, basis = spec
    z, y = feats["z_train"], feats["y_train"]
    protos = torch.stack([z[y == c].mean(0) for c in range(10)], dim=1)  # d x k
    if basis == "PO":
        coords = pinv_svd(protos)[0].float()
    else:
        covs = class_covariances(z, y)
        cov = sum(covs.values()) / 10 if basis == "pooled" else covs[forget]
        coords = gls_coordinates(protos, cov)
    targets = remain_targets(protos, forget, rule)
    return IdeaEdit(protos, coords[[forget]], [forget], targets, head_of(feats), gate, phi)


# ----------------------------------------------------------------------------------------------------------
# Cells (resumable), the library methods, and the two reports

IDEA_CLASSES = (6, 0, 1)
LIBRARY = ("Original", "MoRE", "Remap", "Erase", "ESC", "MoRE-G (lift=False)", "MoRE-G")
SWEEP = ("MoRE", "ESC", "MoRE-G (lift=False)", "MoRE-G")


def library_edit(name: str, feats: dict, forget: int) -> torch.nn.Module:
    """A library method fit on the cached features (defaults, seed 0), as the edit module it inserts."""
    from unlearn.methods import build_method

    if name == "Original":
        return torch.nn.Identity()
    params = {"seed": 0} if name in ("MoRE", "Remap", "MoRE-G") else {}
    if name == "MoRE-G (lift=False)":
        name, params = "MoRE-G", {"seed": 0, "lift": False}
    method = build_method(name, **params)
    extra = {"head": head_of(feats)} if name == "MoRE-G" else {}
    return fit_edit(method, feats, [forget], **extra).layer


def score(edit: torch.nn.Module, feats: dict, forget: int, original: dict[int, float]) -> dict:
    out = output_scores(edit, head_of(feats), feats, [forget])
    out.pop("pred")
    drops = {c: round(original[c] - out["per_class"][c], 2) for c in range(10) if c != forget}
    kr = kr_scores(edit, feats, [forget])
    return {**out, "worst_class_drop": max(drops.values()), "class_drops": drops, "KR_D_ft": kr["D_ft"], "KR": kr}


def score_library(name: str, feats: dict, forget: int, original: dict) -> dict:
    return score(library_edit(name, feats, forget), feats, forget, original)


def score_idea(spec: tuple, feats: dict, forget: int, original: dict) -> dict:
    return score(idea_edit(feats, forget, spec), feats, forget, original)


def ranked(counts: list[int]) -> str:
    """'Class n, ...' by decreasing count, zeros left out."""
    return ", ".join(f"{CLASSES[c]} {n}" for c, n in sorted(enumerate(counts), key=lambda t: -t[1]) if n)


def int_keys(value):
    """JSON turns the class ids that key a dict into strings; turn them back, so a read-back cell equals a fresh one."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: int_keys(v) for k, v in value.items()}
    return value


class Cells:
    """JSON store of finished cells under runs/lookalike/, so an interrupted run resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, compute, *args) -> dict:
        if key not in self.data:
            self.data[key] = compute(*args)
            atomic_write_json(self.path, self.data)
        return int_keys(self.data[key])


def original_per_class(feats: dict) -> dict[int, float]:
    return per_class_accuracy(head_of(feats)(feats["z_test"]).argmax(1), feats["y_test"])


def model_line(feats: dict) -> str:
    acc = float((head_of(feats)(feats["z_test"]).argmax(1) == feats["y_test"]).float().mean()) * 100
    return (
        f"DigitsCNN (width 16, 64-d features) trained {RECIPE.epochs} epochs (SGD lr {RECIPE.lr}, cosine) on a "
        f"random {TRAIN_SUBSET}-image subset of the Fashion-MNIST training set, seed {int(feats.get('seed', 0))}; "
        f"test accuracy {acc:.2f} % "
        f"on the full 10 000-image test set; training took {float(feats['train_s']):.0f} s on 1 CPU thread "
        "(measured under load)"
    )


IDEA_READING = [  # written after reading the table above (seed 0)
    "## Reading (run of this commit)",
    "",
    "- a2, the head's gate (as MoRE-T detects forget samples), meets every goal on Shirt, T-shirt/top and "
    "Trouser with margin (a2+b1 equals a2: clipping changes nothing on the samples the head gates). A remain "
    "sample the Original classifies as a remain class is not touched, so no remain class can lose accuracy. It "
    "became MoRE-G: `MoRE-G (lift=False)` is a2 in the library; `MoRE-G` (the default) adds the lift, at least "
    "one whole target prototype for a gated sample (m̃_f = max(m_f, 1)), which brings D_ft to 0 on samples with "
    "a small m_f (on the seed-1 model, lookalike_sweep_seed1.md, a2 leaves 2.2 % of T-shirt/top).",
    "- a4, head gate and Erase for the rest: also within the goals on these three requests, but close to them "
    "(class drops up to 0.9, KR up to 13.1); not used.",
    "- a1, a soft gate on m_f: cuts the loss only partly and lets D_ft rise above 2 on Shirt, because the m_f of "
    "look-alike remain samples overlaps that of forget samples. a3 (head or m_f) inherits a1's loss.",
    "- b1, clipping m_f at 0: removes only a small part of the loss (the damaging samples have a positive m_f) "
    "and raises KR. b2, shrinking m_f: less loss but D_ft above 4 on Shirt and T-shirt/top (forget samples with "
    "a small m_f are no longer moved far enough).",
    "- c1, the nearest remain class as the target: small loss (the jump is short) but Shirt's D_ft is 9.4. c2/c3, "
    "targets far from the look-alikes: a longer jump for the same m_f, so a loss as large as MoRE's or larger; "
    "KR is very low.",
    "- d1, PO with the pooled within-class covariance: a little less loss than MoRE, classes still drop by more "
    "than 1 point; d2, with the forget class's covariance: worse than MoRE on all three.",
    "- ESC meets none of the KR goals (a probe recovers the forget class) and misses D_ft ≤ 2 on 7 of 10 classes.",
]


def run_ideas(cells: Cells, feats: dict) -> dict:
    original = original_per_class(feats)
    rows = {}
    for forget in IDEA_CLASSES:
        for name in LIBRARY:
            rows[f"{name}|{forget}"] = cells.get(f"ideas/{name}/{forget}", score_library, name, feats, forget, original)
        for name, spec in IDEAS.items():
            rows[f"{name}|{forget}"] = cells.get(f"ideas/{name}/{forget}", score_idea, spec, feats, forget, original)
    return {**run_sweep(cells, feats), "ideas": rows, "notes": IDEA_READING}


def run_sweep(cells: Cells, feats: dict) -> dict:
    """MoRE, ESC and MoRE-G on all 10 single-class requests."""
    original = original_per_class(feats)
    sweep = {}
    for forget in range(10):
        for name in SWEEP:
            sweep[f"{name}|{forget}"] = cells.get(
                f"ideas/{name}/{forget}", score_library, name, feats, forget, original
            )
    pred, y = head_of(feats)(feats["z_test"]).argmax(1), feats["y_test"]
    original_rt = {f: round(100.0 * float((pred[y != f] == y[y != f]).float().mean()), 2) for f in range(10)}
    return {"model": model_line(feats), "original_per_class": original, "original_D_rt": original_rt, "sweep": sweep}


def cell_text(r: dict, original_rt: float) -> str:
    """'D_ft / ΔD_rt / worst class drop / KR D_ft' of one cell."""
    return f"{r['D_ft']:.1f} / {r['D_rt'] - original_rt:+.2f} / {r['worst_class_drop']:+.1f} / {r['KR_D_ft']:.1f}"


def ideas_markdown(result: dict, command: str = "ideas") -> str:
    remain_orig = {int(f): value for f, value in result["original_D_rt"].items()}
    lines = [
        "# Look-alike classes on Fashion-MNIST: " + ("what each idea gave" if "ideas" in result else "10 requests"),
        "",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python bench/lookalike.py {command}`. Model: {result['model']}.",
        "Each edit is fit on the cached training features (method seed 0) and scored on the full test set. "
        "D_ft / D_rt: forget- / remain-test accuracy (%); ΔD_rt: D_rt − Original's; worst class: the largest drop "
        "of one remain class's test accuracy against Original (points); KR: D_ft of a fresh linear probe "
        "(`unlearn.eval.kr.probe`, lr 0.1, 10 epochs) on the edited features. Goals (issue 16): D_ft ≤ 2, "
        "ΔD_rt ≥ −1 (and every class within 1 point), KR D_ft ≤ 15 (chance + 5).",
        "",
    ]
    if "ideas" in result:
        lines += ideas_table(result, remain_orig)
    lines += sweep_table(result, remain_orig)
    lines += ["", *result.get("notes", []), ""]
    return "\n".join(lines)


def ideas_table(result: dict, remain_orig: dict[int, float]) -> list[str]:
    lines = []
    names = list(LIBRARY) + list(IDEAS)
    header = (
        "| idea | " + " | ".join(f"{CLASSES[f]} ({f}): D_ft / ΔD_rt / worst class / KR" for f in IDEA_CLASSES) + " |"
    )
    lines += [header, "|---|" + "---|" * len(IDEA_CLASSES)]
    for name in names:
        cells = []
        for f in IDEA_CLASSES:
            r = result["ideas"][f"{name}|{f}"]
            cells.append(cell_text(r, remain_orig[f]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def sweep_table(result: dict, remain_orig: dict[int, float]) -> list[str]:
    lines = [
        "",
        "## All 10 single-class requests (1 seed)",
        "",
        "| forget | Original D_rt | " + " | ".join(f"{m}: D_ft / ΔD_rt / worst class / KR" for m in SWEEP) + " |",
        "|---|---|" + "---|" * len(SWEEP),
    ]
    fails = {m: [] for m in SWEEP}
    for f in range(10):
        cells = []
        for m in SWEEP:
            r = result["sweep"][f"{m}|{f}"]
            delta = r["D_rt"] - remain_orig[f]
            cells.append(cell_text(r, remain_orig[f]))
            misses = [
                name
                for name, bad in (
                    ("D_ft > 2", r["D_ft"] > 2),
                    ("ΔD_rt < −1", delta < -1),
                    ("a class drops > 1", r["worst_class_drop"] > 1),
                    ("KR D_ft > 15", r["KR_D_ft"] > 15),
                )
                if bad
            ]
            if misses:
                fails[m].append(f"{CLASSES[f]} ({f}): " + ", ".join(misses))
        lines.append(f"| {f} {CLASSES[f]} | {remain_orig[f]:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Goals missed:", ""]
    for m in SWEEP:
        lines.append(f"- {m}: " + ("none" if not fails[m] else "; ".join(fails[m])) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("diagnose", "ideas", "sweep"))
    parser.add_argument("--redo", nargs="*", default=[], help="recompute the cells of these methods/ideas")
    parser.add_argument("--model-seed", type=int, default=1, help="sweep: the seed of another model to train")
    args = parser.parse_args()
    seed = args.model_seed if args.what == "sweep" else 0
    feats = features(seed)
    cells = Cells(run_dir(seed) / "cells.json")
    for key in [k for k in cells.data if k.split("/")[1] in args.redo]:
        del cells.data[key]
    if args.what == "diagnose":
        result = {"model": model_line(feats), "classes": []}
        for forget in DIAGNOSE_CLASSES:
            result["classes"].append(cells.get(f"diagnose/{forget}", diagnose_class, feats, forget))
        result["findings"] = diagnosis_findings(result)
        atomic_write_json(RESULTS / "lookalike_diagnosis.json", result)
        atomic_write_text(RESULTS / "lookalike_diagnosis.md", diagnosis_markdown(result))
        print((RESULTS / "lookalike_diagnosis.md").read_text())
        return
    if args.what == "ideas":
        result, stem, command = run_ideas(cells, feats), "lookalike_ideas", "ideas"
    else:
        result, stem, command = run_sweep(cells, feats), f"lookalike_sweep_seed{seed}", f"sweep --model-seed {seed}"
    atomic_write_json(RESULTS / f"{stem}.json", result)
    atomic_write_text(RESULTS / f"{stem}.md", ideas_markdown(result, command))
    print((RESULTS / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
