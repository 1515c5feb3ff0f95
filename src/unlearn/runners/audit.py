"""`unlearn audit CONFIG.yaml`: every attack of `unlearn.eval.audit` on Original, Retrain and each method x seed.

Resumable like `unlearn compare`: each finished (row, seed) cell is kept under OUTPUT_DIR/audit_cells/ and
read back when the config (data, model, recipe, method, audit settings) is unchanged. Writes audit.json,
audit.md and two PNGs; when OUTPUT_DIR holds a compare run's metrics.json, the audit joins its report.md.
"""

from __future__ import annotations

import dataclasses
import json

from torch import nn
from tqdm.auto import tqdm

from unlearn.config import config_to_dict
from unlearn.errors import UnlearnError
from unlearn.eval.audit import THREATS, audit_model
from unlearn.eval.cost import CostMeter
from unlearn.eval.kr import FeatureSet, split_features
from unlearn.eval.metrics import evaluate_splits
from unlearn.eval.queries import QUERY_THREATS, query_audit
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import FeatureEdit
from unlearn.models.split import split_for_probe
from unlearn.report import plots
from unlearn.report.audit import audit_markdown, summarize_audit
from unlearn.report.audit_plots import plot_relearn_curves
from unlearn.report.tables import write_report
from unlearn.runners.vision import CellStore, Experiment
from unlearn.runtime import seed_everything


def _audit_cell(model: nn.Module, experiment: Experiment, seed: int, base: FeatureSet | None, cost: dict) -> dict:
    """Output-level accuracy and every attack on one model, with the method's cost and the audit's own time."""
    config = experiment.config
    seed_everything(seed)
    meter = CostMeter()
    with meter.phase("audit"):
        output = evaluate_splits(model, experiment.splits)[0]["acc"]
        attacks = {"model output": {"D_ft": output["D_ft"], "D_rt": output["D_rt"], "threat": "output"}}
        attacks.update(audit_model(model, experiment.splits, config.audit, seed, config.model.head, base))
        membership = {}
        if config.audit.queries:
            queried, membership = query_audit(model, experiment.splits, config.audit, seed, config.model.head)
            attacks.update(queried)
    record = {"seed": seed, "attacks": attacks, "membership": membership, "cost": cost}
    return {"record": {**record, "audit_time_s": meter.summary()["time_s"]}}


def run_audit(config, progress: bool = True, resume: bool = True) -> dict:
    """Audit every reference and method of `config` for every seed; write the files and return the summary."""
    if config.task != "class":
        raise UnlearnError("unlearn audit needs a class-wise config (task: class); D_ft is empty otherwise.")
    experiment = Experiment(config, progress, resume)
    out = experiment.out_dir
    context = {**experiment._fingerprint_context(), "audit": dataclasses.asdict(config.audit)}
    cells = CellStore(out / "audit_cells", context, resume)
    references = experiment.reference_models()
    original = references["Original"][0]
    cells.pin(original)
    head = config.model.head
    shared: dict[str, FeatureSet] = {}

    def features_of(name: str, model: nn.Module) -> FeatureSet:
        if name not in shared:
            shared[name] = split_features(split_for_probe(model, head)[0], experiment.splits)
        return shared[name]

    rows: dict[str, list[dict]] = {}
    total = (len(config.references) + len(config.methods)) * len(config.seeds)
    bar = tqdm(total=total, desc="audit", disable=not progress)
    for name in config.references:
        model, cost = references[name]
        rows[name] = []
        for seed in config.seeds:
            spec = {"reference": name}
            cell = cells.get(name, spec, seed)
            if cell is None:
                cell = _audit_cell(model, experiment, seed, features_of(name, model), cost)
                cells.put(name, spec, seed, cell)
            rows[name].append(cell["record"])
            bar.update()
    for method_config in config.methods:
        rows[method_config.row] = []
        for seed in config.seeds:
            bar.set_postfix(method=method_config.row, seed=seed, refresh=False)
            spec = {"method": method_config.name, "params": method_config.params}
            cell = cells.get(method_config.row, spec, seed)
            if cell is None:
                method = experiment.method(method_config, seed)
                unlearned = method.unlearn(original, experiment.splits, head=head)
                at_head = isinstance(method, FeatureEdit) and method.at_head
                base = features_of("Original", original) if at_head else None
                cell = _audit_cell(unlearned, experiment, seed, base, method.cost.summary())
                cells.put(method_config.row, spec, seed, cell)
            rows[method_config.row].append(cell["record"])
            bar.update()
    bar.close()
    audit = summarize_audit(rows, experiment.data.num_classes)
    audit.update(
        name=config.name,
        dataset=experiment.data.name,
        model=config.model.name,
        forget_classes=config.forget_classes,
        seeds=config.seeds,
        device=str(experiment.device),
        split_sizes={name: len(split) for name, split in experiment.splits.named().items()},
        settings=dataclasses.asdict(config.audit),
        threats={**THREATS, **QUERY_THREATS},
        config=config_to_dict(config),
    )
    audit["plots"] = [
        str(plots.plot_audit_heatmap(audit, out / "plots" / "audit_heatmap.png").relative_to(out)),
        str(plots.plot_audit_worst(audit, out / "plots" / "audit_worst.png").relative_to(out)),
        *[str(path.relative_to(out)) for path in plot_relearn_curves(audit, out / "plots")],
    ]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "audit.md", audit_markdown(audit))
    compare = out / "metrics.json"
    if compare.is_file():  # a compare run of this config: the audit becomes a section of its report
        metrics = json.loads(compare.read_text())
        metrics["audit"] = audit
        write_report(metrics, out)
    return audit
