"""The irreversibility audit as tables: method x attack -> forget-test / remain-test accuracy, worst cases, cost."""

from __future__ import annotations

from unlearn.report.markdown import MISSING, markdown_table, summarize

BYPASS = "bypass"  # dropping a feature edit: a statement about released weights, kept out of the main worst case
WEIGHT_THREATS = (BYPASS, "blocks")  # attacks that need the released weights: out of the served worst case
USABLE_DROP = 10.0  # an attack counts in the worst case when its D_rt stays within this many points of the Original's


def _worst(attacks: dict[str, dict], keep) -> dict:
    """The attack with the highest mean D_ft among those `keep` accepts, with its D_ft and D_rt."""
    kept = [name for name, attack in attacks.items() if keep(attack)]
    name = max(kept, key=lambda n: attacks[n]["D_ft"]["mean"])
    return {"attack": name, "D_ft": attacks[name]["D_ft"], "D_rt": attacks[name]["D_rt"]}


def summarize_audit(rows: dict[str, list[dict]], num_classes: int) -> dict:
    """Per row: mean ± std over seeds of D_ft / D_rt per attack, worst cases, and the mean cost of unlearning
    and of the audit.

    Worst cases (highest mean D_ft): "worst" over attacks with the edit kept whose D_rt stays within
    USABLE_DROP points of the Original's output D_rt (an attacker who calls everything the forget class
    gets D_ft 100 and D_rt 0, which recovers nothing); "worst_any" without that condition;
    "worst_with_bypass" as "worst" but also counting the weight holder's attacks (edit removal, block probes).
    Membership: mean ± std of
    AUC and TPR@5%FPR per family, and the family with the highest mean AUC ("membership_worst").
    """
    summary = {"num_classes": num_classes, "chance": 100.0 / num_classes, "usable_drop": USABLE_DROP, "rows": {}}
    first = next(iter(rows.values()))
    reference = rows.get("Original", first)
    floor = summarize([r["attacks"]["model output"]["D_rt"] for r in reference])["mean"] - USABLE_DROP
    for row, records in rows.items():
        attacks = {}
        for name in dict.fromkeys(a for record in records for a in record["attacks"]):
            found = [record["attacks"][name] for record in records if name in record["attacks"]]
            attacks[name] = {
                "threat": found[0]["threat"],
                **{split: summarize([f[split] for f in found]) for split in ("D_ft", "D_rt")},
            }
        costs = [record.get("cost", {}) for record in records]
        families = dict.fromkeys(f for record in records for f in record.get("membership", {}))
        membership = {
            family: {
                key: summarize([r["membership"][family][key] for r in records if family in r.get("membership", {})])
                for key in ("AUC", "TPR@5%FPR")
            }
            for family in families
        }
        summary["rows"][row] = {
            "runs": records,
            "attacks": attacks,
            "worst": _worst(attacks, lambda a: a["threat"] not in WEIGHT_THREATS and a["D_rt"]["mean"] >= floor),
            "worst_any": _worst(attacks, lambda a: a["threat"] not in WEIGHT_THREATS),
            "worst_with_bypass": _worst(attacks, lambda a: a["D_rt"]["mean"] >= floor),
            "membership": membership,
            "membership_worst": max(membership, key=lambda f: membership[f]["AUC"]["mean"]) if membership else None,
            "cost": {
                key: summarize([c[key] for c in costs])
                for key in ("time_s", "peak_mem_mb")
                if all(key in c for c in costs)
            },
            "audit_time_s": summarize([record["audit_time_s"] for record in records]),
        }
    return summary


def _pair(attack: dict | None) -> str:
    """ "D_ft ± std / D_rt" of one attack, or "–"."""
    if attack is None:
        return MISSING
    return f"{attack['D_ft']['mean']:.1f} ± {attack['D_ft']['std']:.1f} / {attack['D_rt']['mean']:.1f}"


def _member(found: dict | None) -> str:
    """ "AUC ± std (TPR)" of one membership family, or "–"."""
    if found is None:
        return MISSING
    return f"{found['AUC']['mean']:.1f} ± {found['AUC']['std']:.1f} ({found['TPR@5%FPR']['mean']:.0f})"


def _above_reference(entry: dict, reference: dict) -> str:
    """The largest excess of a family's AUC over Retrain's AUC on the same family: "+x.x (family)", or "–"."""
    gaps = {f: v["AUC"]["mean"] - reference[f]["AUC"]["mean"] for f, v in entry["membership"].items() if f in reference}
    if not gaps:
        return MISSING
    family = max(gaps, key=gaps.get)
    return f"{gaps[family]:+.1f} ({family})"


def audit_markdown(audit: dict) -> str:
    """audit.md: how to read it, the threat models, worst cases with cost, then the full method x attack table."""
    rows, chance = audit["rows"], audit["chance"]
    names = list(rows)
    attacks = list(dict.fromkeys(a for entry in rows.values() for a in entry["attacks"]))
    threat_of = {a: next(e["attacks"][a]["threat"] for e in rows.values() if a in e["attacks"]) for a in attacks}
    worst_rows = []
    for name, entry in rows.items():
        worst, cost = entry["worst"], entry["cost"]
        worst_rows.append(
            [
                name,
                f"{worst['D_ft']['mean']:.1f} ± {worst['D_ft']['std']:.1f} (chance {chance:.1f})",
                worst["attack"],
                f"{entry['attacks']['model output']['D_rt']['mean']:.2f}",
                *[
                    f"{entry[k]['D_ft']['mean']:.1f} / {entry[k]['D_rt']['mean']:.1f} ({entry[k]['attack']})"
                    for k in ("worst_any", "worst_with_bypass")
                ],
                f"{cost['time_s']['mean']:.2f}" if "time_s" in cost else MISSING,
                f"{cost['peak_mem_mb']['mean']:.1f}" if "peak_mem_mb" in cost else MISSING,
                f"{entry['audit_time_s']['mean']:.0f}",
            ]
        )
    worst_table = markdown_table(
        [
            "Method",
            "worst D_ft, edit kept (↓)",
            "by",
            "D_rt, model output (↑)",
            "worst D_ft / D_rt, any D_rt",
            "worst D_ft / D_rt, incl. edit removed",
            "unlearn time (s)",
            "unlearn peak mem (MB)",
            "audit time (s)",
        ],
        worst_rows,
    )
    families = list(dict.fromkeys(f for entry in rows.values() for f in entry.get("membership", {})))
    reference = rows.get("Retrain", {}).get("membership", {})
    member_table = markdown_table(
        ["Method", *families, "worst family", "largest AUC − Retrain's (family)"],
        [
            [
                name,
                *[_member(entry["membership"].get(f)) for f in families],
                entry.get("membership_worst") or MISSING,
                _above_reference(entry, reference),
            ]
            for name, entry in rows.items()
            if entry.get("membership")
        ],
        text_columns=1,
    )
    table = markdown_table(
        ["Threat", "Attack", "chance", *names],
        [[threat_of[a], a, f"{chance:.1f}", *[_pair(rows[n]["attacks"].get(a)) for n in names]] for a in attacks],
        text_columns=2,
    )
    threats = "\n".join(f"- **{name}**: the attacker {text}." for name, text in audit.get("threats", {}).items())
    plots = "\n\n".join(f"![{p.split('/')[-1][:-4]}]({p})" for p in audit.get("plots", []))
    sizes = audit.get("split_sizes", {})
    return (
        "\n\n".join(
            part
            for part in [
                f"# Irreversibility audit: {audit.get('dataset', MISSING)} / {audit.get('model', MISSING)}",
                f"Forget classes {audit.get('forget_classes')}, seeds {audit.get('seeds')}, device "
                f"{audit.get('device', MISSING)}; splits {sizes}. Every number is a test accuracy in percent on "
                f"samples no attacker saw: **D_ft** = forget-test (↓, the forgotten class coming back; chance "
                f"{chance:.1f}), **D_rt** = remain-test (↑). Cells: D_ft mean ± std over seeds / D_rt mean. "
                "Worst case = the attack with the highest mean D_ft among those that keep D_rt within "
                f"{audit.get('usable_drop', USABLE_DROP):.0f} points of the Original's (one that calls everything "
                "the forget class scores D_ft 100 and recovers nothing), with the edit in place (a served model); "
                "the next columns drop the D_rt condition, or also count the weight holder's attacks (removing a "
                "feature edit, probing every block). Relearning is compared with Retrain, which also learns a class "
                "it never saw.",
                "## Threat models\n\n" + threats,
                "## Worst case and cost per method\n\n" + worst_table,
                "## Method x attack (D_ft ± std / D_rt)\n\n" + table,
                "## Membership detection (forget vs remain: AUC ± std, TPR at 5 % FPR; 50 / 5 = no signal)\n\n"
                "A class-balanced logistic-regression detector per attack family, trained on D_f ∪ D_r and scored "
                "on D_ft ∪ D_rt. Retrain never saw the forget class, so its row is the reference.\n\n" + member_table
                if families
                else "",
                "## Plots\n\n" + plots if plots else "",
            ]
            if part
        )
        + "\n"
    )
