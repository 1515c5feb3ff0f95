"""The diffusion run's report.md: exactness of the K/V edit, output effect, images and cost."""

from __future__ import annotations

import json

from unlearn.report.markdown import markdown_table


def _fmt(value: float | None, digits: int = 3) -> str:
    """A number for the report: fixed point, scientific when tiny, "–" when missing."""
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"


def diffusion_report(metrics: dict) -> str:
    """Markdown: setup, per-method exactness and cross-attention output effect per concept, LPIPS, images, cost."""
    config, concepts = metrics["config"], metrics["concepts"]
    forget = set(config["forget"])
    lines = ["# Concept erasure in cross-attention", ""]
    if config.get("note"):
        lines += [f"> {config['note']}", ""]
    lines += [
        f"Model `{config['model_dir']}`: {len(metrics['layers'])} cross-attention layers edited (`to_k`, `to_v`, "
        f"W' = W E). Forget: {', '.join(config['forget'])}; remain: {', '.join(config['remain'])}. "
        f"Prototype templates: {len(config['templates'])}; seed {config['seed']}; "
        f"PO projection: {'on' if config['orthogonal'] else 'off'}.",
        "",
        "## Keys and values at the concept prototypes",
        "",
        "Largest relative error over layers and K/V: a forget concept's edited K/V against the remap target's "
        "original K/V (against 0 for erase); a remain concept's edited K/V against its original. 0 = exact.",
        "",
    ]
    methods = metrics["methods"]
    header = ["concept", *methods]
    rows = [
        [f"**{c}** (forget)" if c in forget else c, *(_fmt(methods[m]["kv_max_rel_error"][c]) for m in methods)]
        for c in concepts
    ]
    lines += [markdown_table(header, rows), ""]
    lines += ["Remap targets (layer → forget concept → concept it now writes):", ""]
    for method, entry in methods.items():
        if entry["targets"]:
            mapping = {}
            for layer, targets in entry["targets"].items():
                mapping.setdefault(json.dumps(targets), []).append(layer)
            parts = [
                f"{', '.join(f'{k} → {v}' for k, v in json.loads(t).items())} ({len(ls)} layers)"
                for t, ls in mapping.items()
            ]
            lines.append(f"- {method}: " + "; ".join(parts))
    lines += [
        "",
        "Cosine of every concept's stacked keys and values (all layers), before vs before and before vs after, "
        "centred on their mean over concepts before the edit (raw text features share one large direction that "
        "would push every cosine towards 1). For an exact remap a forget row matches its target's row:",
        "",
    ]
    lines += [f"![{m}]({entry['heatmap']})" for m, entry in methods.items()]
    lines += [
        "",
        "## Cross-attention outputs per concept",
        "",
        "One UNet pass (seeded latents, timestep "
        f"{config['probe_timestep']}) on the prototype templates filled with each concept; outputs of every "
        "`attn2`, averaged over layers and prompts. cos(after, target before): the forget prompt's output after "
        "the edit against the target concept's prompt before it (next to the same before the edit).",
        "",
    ]
    header = [
        "method",
        "concept",
        "cos(after, before)",
        "rel. change",
        "cos(after, target before)",
        "cos(before, target before)",
    ]
    rows = []
    for method, entry in methods.items():
        for concept, values in entry["attn2_outputs"].items():
            name = f"**{concept}** (forget)" if concept in forget else concept
            rows.append(
                [
                    method,
                    name,
                    _fmt(values["cos_before"]),
                    _fmt(values["rel_change"]),
                    _fmt(values.get("cos_target")),
                    _fmt(values.get("cos_target_orig")),
                ]
            )
    lines += [markdown_table(header, rows, text_columns=2), "", "## Images and LPIPS", "", metrics["lpips"], ""]
    with_lpips = {m: e["lpips"] for m, e in methods.items() if "lpips" in e}
    if with_lpips:
        header = ["method", "LPIPS_f (↑)", "LPIPS_r (↓)", "LPIPS_d (↑)"]
        rows = [[m, _fmt(s["LPIPS_f"]), _fmt(s["LPIPS_r"]), _fmt(s["LPIPS_d"])] for m, s in with_lpips.items()]
        lines += [markdown_table(header, rows), ""]
    with_pixels = {m: e["pixel_l1"] for m, e in methods.items() if "pixel_l1" in e}
    if with_pixels:
        lines += [
            "Mean absolute pixel difference before/after (images in [-1, 1]; a crude stand-in, not LPIPS), on "
            f"{metrics['num_eval_prompts']} prompts of {len(config['eval_artists'])} artists:",
            "",
        ]
        header = ["method", "L1_f (forget artists)", "L1_r (other artists)", "L1_d = L1_f − L1_r"]
        rows = [[m, _fmt(s["L1_f"]), _fmt(s["L1_r"]), _fmt(s["L1_d"])] for m, s in with_pixels.items()]
        lines += [markdown_table(header, rows), ""]
    if metrics.get("image_grid"):
        lines += [f"![images before and after]({metrics['image_grid']})", ""]
    lines += ["## Cost", ""]
    cost = metrics["cost"]
    generating = [phase for phase in cost if phase.startswith("generate_")]
    if generating:
        total = sum(cost[phase]["time_s"] for phase in generating)
        lines += [
            f"Generating images (`generate_*` rows: {metrics['num_eval_prompts']} prompts × {config['steps']} "
            f"steps per model, {len(generating)} models) took {total:.1f} s of the "
            f"{sum(v['time_s'] for v in cost.values()):.1f} s measured here; the edits themselves are the "
            "`edit_*` rows. Set `generate: false` (or fewer `prompts_per_artist`) to skip or shorten it.",
            "",
        ]
    rows = [[phase, f"{v['time_s']:.3f}", f"{v['peak_mem_mb']:.1f}"] for phase, v in cost.items()]
    lines += [markdown_table(["phase", "time (s)", "peak extra RSS (MB)"], rows), ""]
    return "\n".join(lines)
