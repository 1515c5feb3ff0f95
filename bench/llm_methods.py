"""Method-level checks behind the LM method defaults (helper measurements, not the issue's must-shows).

    OMP_NUM_THREADS=1 .venv/bin/python bench/llm_methods.py [--alpha] [--router] [--importance]

--alpha: RMU and SRMU on the dense facts testbed (configs/llm_dense_overlap.yaml, overlap 0.3, lr 1e-3, 150 steps)
at α = 1200 (the 7B reference), 400, 100 and the default 1200·d/4096; forget / retain answer accuracy, perplexity,
and forget accuracy after the projection attack. Writes bench/results/llm_rmu_alpha.{json,md}.
--router: UOE+GA and UOE+NPO on the MoE facts testbed (configs/llm_moe.yaml) with the anchor on (α = 1) and off,
and with the router frozen, at lr 1e-3, 3e-3 and 1e-2 (40 steps): accuracies and the share of forget / retain
tokens whose top-k experts include the target expert. Writes bench/results/llm_uoe_router.{json,md}.
--importance: how selective SRMU's normalised importance maps are on the dense facts testbed at overlap 0 and 0.3
(mean / min / median of I_norm over the d features, share of features with I_norm > 0). Writes
bench/results/llm_srmu_importance.{json,md}. No flag runs all three.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unlearn.data.facts import lm_loader
from unlearn.io import atomic_write_text
from unlearn.llm import build_lm_method, project_out_misdirection
from unlearn.llm import evaluate as ev
from unlearn.llm.moe import expert_attribution
from unlearn.llm.rmu import default_alpha
from unlearn.llm.srmu import IMPORTANCE_MAPS
from unlearn.runners.llm import build_setting, load_llm_config

ROOT = Path(__file__).resolve().parents[1]


def setting_and_loaders(config_path: str, overrides: dict):
    config = load_llm_config(ROOT / config_path)
    config.data.update(overrides)
    setting = build_setting(config, progress=False)

    def loaders():  # fresh loaders per run, so every method sees the same batch order
        return (
            lm_loader(setting.forget_items, setting.tokenizer, config.batch_size, shuffle=True, seed=config.seed),
            lm_loader(setting.retain_items, setting.tokenizer, config.batch_size, shuffle=True, seed=config.seed + 1),
        )

    return config, setting, loaders


def accuracies(model, setting) -> dict:
    tok = setting.tokenizer
    return {
        "forget_acc": ev.answer_accuracy(model, tok, setting.forget_pairs),
        "retain_acc": ev.answer_accuracy(model, tok, setting.retain_pairs),
        "ppl": ev.perplexity(model, lm_loader(setting.general_test, tok, 64)),
    }


def alpha_sweep() -> tuple[dict, list[str]]:
    config, setting, loaders = setting_and_loaders("configs/llm_dense_overlap.yaml", {"overlap": 0.3})
    original = setting.model
    hidden = original.config.hidden_size
    rows, lines = [], []
    base = {"row": "Original", "alpha": None, **accuracies(original, setting)}
    rows.append(base)
    for alpha in (1200.0, 400.0, 100.0, default_alpha(hidden)):
        for name in ("RMU", "SRMU"):
            forget_loader, retain_loader = loaders()
            method = build_lm_method(name, steps=150, lr=1e-3, alpha=alpha, steering_coeff=None, seed=config.seed)
            start = time.perf_counter()
            unlearned = method.unlearn(original, forget_loader, retain_loader)
            seconds = time.perf_counter() - start
            row = {"row": name, "alpha": alpha, **accuracies(unlearned, setting), "time_s": seconds}
            with project_out_misdirection(
                unlearned,
                method.report["layer"],
                lm_loader(setting.forget_items, setting.tokenizer, 64),
                reference=original,
            ):
                row["attack_forget_acc"] = ev.answer_accuracy(unlearned, setting.tokenizer, setting.forget_pairs)
            rows.append(row)
            print(row, flush=True)
    lines += [
        f"# RMU / SRMU α sweep (dense facts testbed, d = {hidden}, overlap 0.3, lr 1e-3, 150 steps)",
        "",
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/llm_methods.py --alpha`; "
        f"default α = 1200·d/4096 = {default_alpha(hidden):g}.",
        "",
        "| method | α | forget acc | retain acc | ppl | forget acc after projection attack |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        alpha = "" if row["alpha"] is None else f"{row['alpha']:g}"
        attack = f"{100 * row['attack_forget_acc']:.1f}" if "attack_forget_acc" in row else ""
        lines.append(
            f"| {row['row']} | {alpha} | {100 * row['forget_acc']:.1f} | {100 * row['retain_acc']:.1f} "
            f"| {row['ppl']:.2f} | {attack} |"
        )
    return {"config": "configs/llm_dense_overlap.yaml", "overlap": 0.3, "hidden_size": hidden, "rows": rows}, lines


def target_share(model, items, setting, target: tuple[int, int], top_k: int) -> float:
    loader = lm_loader([i if isinstance(i, str) else f"{i[0]} {i[1]}" for i in items], setting.tokenizer, 64)
    probs = ev.routing(model, loader)[target[0]]
    return (probs.topk(top_k, dim=-1).indices == target[1]).any(-1).float().mean().item()


def router_sweep() -> tuple[dict, list[str]]:
    config, setting, loaders = setting_and_loaders("configs/llm_moe.yaml", {})
    original = setting.model
    top_k = original.config.num_experts_per_tok
    target = tuple(expert_attribution(original, loaders()[0]).top(1)[0])

    def shares(model) -> dict:
        return {
            "forget_share": target_share(model, setting.forget_items, setting, target, top_k),
            "retain_share": target_share(model, setting.retain_items, setting, target, top_k),
        }

    rows = [{"row": "Original", **accuracies(original, setting), **shares(original)}]
    variants = ((1.0, True), (0.0, True), (1.0, False))  # (anchor weight, router trains)
    for lr in (1e-3, 3e-3, 1e-2):
        for inner in ("GA", "NPO"):
            for anchor, train_router in variants:
                forget_loader, retain_loader = loaders()
                method = build_lm_method(
                    "UOE", inner=inner, anchor_weight=anchor, train_router=train_router, seed=config.seed,
                    inner_params={"steps": 40, "lr": lr},
                )  # fmt: skip
                unlearned = method.unlearn(original, forget_loader, retain_loader)
                row = {"row": f"UOE+{inner}", "lr": lr, "anchor_weight": anchor, "train_router": train_router}
                row.update(accuracies(unlearned, setting))
                row.update(shares(unlearned), target=method.report["target_experts"][0])
                rows.append(row)
                print(row, flush=True)
    lines = [
        f"# UOE router behaviour (MoE facts testbed, target expert {list(target)}, top-{top_k}, 40 steps)",
        "",
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/llm_methods.py --router`. Share = tokens whose top-k experts at",
        "the target layer include the target expert.",
        "",
        "| method | lr | anchor α | router | forget acc | retain acc | ppl | forget share | retain share |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lr = f"{row['lr']:g}" if "lr" in row else ""
        anchor = f"{row['anchor_weight']:g}" if "anchor_weight" in row else ""
        router = {True: "trains", False: "frozen"}.get(row.get("train_router"), "")
        lines.append(
            f"| {row['row']} | {lr} | {anchor} | {router} | {100 * row['forget_acc']:.1f} "
            f"| {100 * row['retain_acc']:.1f} | {row['ppl']:.2f} | {100 * row['forget_share']:.1f} "
            f"| {100 * row['retain_share']:.1f} |"
        )
    return {"config": "configs/llm_moe.yaml", "target": list(target), "rows": rows}, lines


def importance_maps() -> tuple[dict, list[str]]:
    rows = []
    for overlap in (0.0, 0.3):
        config, setting, loaders = setting_and_loaders("configs/llm_dense_overlap.yaml", {"overlap": overlap})
        for kind in IMPORTANCE_MAPS:
            method = build_lm_method("SRMU", importance=kind, steps=1, lr=1e-6, seed=config.seed)
            method.unlearn(setting.model, *loaders())  # one tiny step: the map is computed before training
            values = method.importance_normalised
            rows.append(
                {
                    "overlap": overlap,
                    "importance": kind,
                    "layer": method.report["layer"],
                    "mean": values.mean().item(),
                    "min": values.min().item(),
                    "median": values.median().item(),
                    "nonzero_fraction": method.report["importance_nonzero_fraction"],
                }
            )
            print(rows[-1], flush=True)
    lines = [
        "# SRMU importance maps on the dense facts testbed (I_norm over the d = 64 features of the misdirected layer)",
        "",
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/llm_methods.py --importance`",
        "",
        "| overlap | map | mean | min | median | share > 0 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['overlap']:g} | {row['importance']} | {row['mean']:.3f} | {row['min']:.3f} | {row['median']:.3f} "
            f"| {row['nonzero_fraction']:.3f} |"
        )
    return {"config": "configs/llm_dense_overlap.yaml", "rows": rows}, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", action="store_true")
    parser.add_argument("--router", action="store_true")
    parser.add_argument("--importance", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = (
        (args.alpha, "llm_rmu_alpha", alpha_sweep),
        (args.router, "llm_uoe_router", router_sweep),
        (args.importance, "llm_srmu_importance", importance_maps),
    )
    every = not any(flag for flag, _, _ in runs)
    for flag, name, run in runs:
        if flag or every:
            result, lines = run()
            atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2))
            atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
