"""One experiment end to end: config -> data + model -> methods -> evaluation -> report files."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from unlearn import distributed
from unlearn.config import ExperimentConfig, MethodConfig, config_to_dict
from unlearn.data import load_dataset
from unlearn.data.base import LabeledTensors
from unlearn.data.splits import SPLIT_NAMES, ForgetSplits, split_by_class, split_random_samples
from unlearn.errors import UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.eval.kr import FeatureSet, knowledge_retention, split_features
from unlearn.eval.metrics import GAP_METRICS, average_gap, evaluate_splits
from unlearn.eval.mia import MIA_DEFINITION, mia_score
from unlearn.io import atomic_write_json, atomic_write_text
from unlearn.methods import METHODS, FeatureEdit, Method, build_method
from unlearn.methods.prototypes import collect_prototypes
from unlearn.methods.saved import can_save, load_model, save_edit
from unlearn.models import build_model
from unlearn.models.split import split_for_probe, split_model
from unlearn.models.train import cache_key, checkpoint_path, load_checkpoint, train_cached
from unlearn.report import plots
from unlearn.report.markdown import slug
from unlearn.report.tables import summarize_runs, write_report
from unlearn.runtime import resolve_device, seed_everything


def evaluate(
    model: nn.Module,
    splits: ForgetSplits,
    config: ExperimentConfig,
    seed: int,
    base: FeatureSet | None = None,
    outputs: tuple[dict, dict] | None = None,
) -> dict:
    """Accuracies, HM, MIA and KR of one (unlearned or reference) model for one seed.

    `base` (features before any edit) and `outputs` (of `evaluate_splits`) may be passed when they do
    not depend on the seed, so a deterministic model is not run over the data once per seed.
    """
    seed_everything(seed)
    record, losses = outputs if outputs is not None else evaluate_splits(model, splits)
    record = {"seed": seed, **record}
    if config.eval.mia:
        record["MIA"] = mia_score(losses["D_f"], torch.cat([losses["D_ft"], losses["D_rt"]]), seed)
    if config.eval.kr_lrs:
        record["kr"] = knowledge_retention(
            model,
            splits,
            tuple(config.eval.kr_lrs),
            config.eval.kr_epochs,
            config.eval.kr_batch_size,
            seed,
            config.model.head,
            base,
        )
    return record


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int, forget: list[int]) -> torch.Tensor:
    """Prototype matrix (d x k) of precomputed features, by the same streaming code as MoRE's."""
    return collect_prototypes(nn.Identity(), LabeledTensors(features, labels), forget, num_classes).matrix


def joined(features: FeatureSet, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of several splits, concatenated in the order given."""
    values, labels = features
    return torch.cat([values[name] for name in names]), torch.cat([labels[name] for name in names])


def edited(edit: nn.Module, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([edit(chunk).cpu() for chunk in features.split(1024)])


def state_sha256(model: nn.Module) -> str:
    """Hash of a model's state_dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class CellStore:
    """Finished (row, seed) results on disk, so an interrupted comparison resumes where it stopped.

    A cell is `cells/<row>/seed<k>.json` holding its fingerprint (a hash of the method spec, the seed and
    everything in the config that changes the numbers) and the record; a cell whose fingerprint differs
    from the current config, or whose plot files are gone, is recomputed. Writes are atomic.
    """

    def __init__(self, root: Path, context: dict, resume: bool) -> None:
        self.root, self.context, self.resume = root, context, resume

    def _path(self, row: str, seed: int) -> Path:
        return self.root / slug(row) / f"seed{seed}.json"

    def _fingerprint(self, spec: dict, seed: int) -> str:
        return cache_key(context=self.context, spec=spec, seed=seed)

    def get(self, row: str, spec: dict, seed: int, needs_plots: bool = False) -> dict | None:
        path = self._path(row, seed)
        if not self.resume or not path.is_file():
            return None
        try:
            cell = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if cell.get("fingerprint") != self._fingerprint(spec, seed):
            return None
        if needs_plots and not cell.get("plots"):
            return None
        if not all((self.root.parent / plot).is_file() for plot in cell.get("plots", [])):
            return None
        return cell

    def pin(self, model: nn.Module) -> None:
        """Tie the cells to this Original: a retrained one (another machine or thread count gives other
        weights) or another checkpoint at the same path makes every cell stale, instead of being mixed in."""
        self.context = {**self.context, "original_sha256": state_sha256(model)}

    def put(self, row: str, spec: dict, seed: int, cell: dict) -> None:
        cell = {"fingerprint": self._fingerprint(spec, seed), **cell}
        atomic_write_json(self._path(row, seed), cell, indent=None)


class Experiment:
    """Holds what every method of one config shares: data, splits, the Original model and its features."""

    def __init__(self, config: ExperimentConfig, progress: bool = True, resume: bool = False) -> None:
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.device)
        self.out_dir = Path(config.output_dir)
        self.data = load_dataset(config.data.name, **config.data.params)
        if config.task == "sample":
            self.splits = split_random_samples(self.data, config.forget_fraction, config.split_seed)
        else:
            self.splits = split_by_class(self.data, config.forget_classes)
        self.references: dict[str, tuple[nn.Module, dict]] = {}
        self.cells = CellStore(self.out_dir / "cells", self._fingerprint_context(), resume)

    def _fingerprint_context(self) -> dict:
        """Everything besides the method and seed that a cell's numbers depend on."""
        config = config_to_dict(self.config)
        keep = ("task", "forget_classes", "forget_fraction", "split_seed", "references", "data", "model", "train")
        evaluation = {key: value for key, value in config["eval"].items() if key not in ("plots", "embedding")}
        return {**{key: config[key] for key in keep}, "eval": evaluation, "device": str(self.device)}

    def build(self) -> nn.Module:
        data, model = self.data, self.config.model
        return build_model(model.name, data.num_classes, data.input_shape, **model.params)

    def _trained(self, name: str, dataset, key: dict) -> tuple[nn.Module, dict]:
        meter = CostMeter()
        with meter.phase("train"):
            model, cached = train_cached(
                self.build,
                dataset,
                self.config.train,
                self.config.cache_dir,
                key,
                self.device,
                desc=name.lower(),
                progress=self.progress,
            )
        cost = meter.summary()
        if self.config.cache_dir is None:
            return model, {**cost, "cached": False}
        # the cost of a reference is its training, also when this run only loaded it: kept beside the checkpoint
        sidecar = checkpoint_path(self.config.cache_dir, name.lower(), self.config.train, key).with_suffix(".cost.json")
        if not cached:
            atomic_write_json(sidecar, cost)
            return model, {**cost, "cached": False}
        # a checkpoint cached before costs were recorded: its training cost is unknown ("–"), not the load time
        try:
            trained = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            trained = {}  # a sidecar torn before writes were atomic: the training cost is unknown
        return model, {**trained, "load_time_s": cost["time_s"], "cached": True}

    def _reference_key(self) -> dict:
        config = self.config
        return {
            "data": config.data.name,
            "data_params": config.data.params,
            "model": config.model.name,
            "model_params": config.model.params,
        }

    def original(self, key: dict | None = None) -> tuple[nn.Module, dict]:
        """The model to unlearn: the config's checkpoint, else trained on all of D (cached)."""
        if self.config.model.checkpoint:
            return load_checkpoint(self.build().to(self.device), self.config.model.checkpoint), {}
        return self._trained("Original", self.data.train, {**(key or self._reference_key()), "classes": "all"})

    def reference_models(self) -> dict[str, tuple[nn.Module, dict]]:
        """Original (trained on D, or the config's checkpoint) and Retrain (trained on D_r only)."""
        config = self.config
        key = self._reference_key()
        self.references["Original"] = self.original(key)
        if "Retrain" in config.references:
            without = (
                {"fraction": config.forget_fraction, "split_seed": config.split_seed}
                if config.task == "sample"
                else config.forget_classes
            )
            self.references["Retrain"] = self._trained("Retrain", self.splits.D_r, {**key, "without": without})
        return self.references

    def run(self) -> dict:
        config = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
        references = self.reference_models()
        original = references["Original"][0]
        self.cells.pin(original)
        base = self._features(original)
        results: dict[str, dict] = {name: {"runs": self._reference_runs(name, base)} for name in config.references}
        plot_paths = []
        bar = tqdm(total=len(config.methods) * len(config.seeds), desc="unlearn + evaluate", disable=not self.progress)
        for method_config in config.methods:
            runs = []
            for index, seed in enumerate(config.seeds):
                bar.set_postfix(method=method_config.row, seed=seed, refresh=False)
                spec = {"method": method_config.name, "params": method_config.params}
                first = index == 0  # plots show, and edits/ keeps, the first seed's model
                cell = self.cells.get(method_config.row, spec, seed, needs_plots=first and config.eval.plots)
                if cell is None:
                    cell = self._method_cell(method_config, seed, original, base, first)
                    self.cells.put(method_config.row, spec, seed, cell)
                runs.append(cell["record"])
                plot_paths += cell.get("plots", [])
                bar.update()
            results[method_config.row] = {"runs": runs}
        bar.close()
        if config.task == "sample" and "Retrain" in results:  # paper Table 4: average gap to Retrain
            retrain = summarize_runs(results["Retrain"]["runs"])
            reference = {name: retrain[name]["mean"] for name in GAP_METRICS if name in retrain}
            for result in results.values():
                for run in result["runs"]:
                    run["avg_gap"] = average_gap(run, reference)
        for result in results.values():
            result["summary"] = summarize_runs(result["runs"])
        metrics = {
            "name": config.name,
            "dataset": self.data.name,
            "model": config.model.name,
            "num_classes": self.data.num_classes,
            "task": config.task,
            "forget_classes": config.forget_classes,
            "seeds": config.seeds,
            "device": str(self.device),
            "split_sizes": {name: len(getattr(self.splits, name)) for name in SPLIT_NAMES},
            "kr_lrs": config.eval.kr_lrs,
            "mia_definition": MIA_DEFINITION,
            "config": config_to_dict(config),
            "methods": results,
        }
        if config.eval.plots and config.eval.kr_lrs:
            plot_paths.append(self._relative(plots.plot_kr(metrics, self.out_dir / "plots" / "kr.png")))
            plot_paths.append(self._relative(plots.plot_hm_kr(metrics, self.out_dir / "plots" / "hm_vs_kr.png")))
        metrics["plots"] = plot_paths
        write_report(metrics, self.out_dir)
        return metrics

    def _features(self, model: nn.Module) -> FeatureSet | None:
        """Features before the model's edit on every split, when KR or the plots need them (else None)."""
        if not (self.config.eval.kr_lrs or self.config.eval.plots):
            return None
        return split_features(split_for_probe(model, self.config.model.head)[0], self.splits)

    def _reference_runs(self, name: str, base: FeatureSet | None) -> list[dict]:
        """Per-seed records of a reference model; its features and outputs are computed once, and only if needed."""
        model, cost = self.references[name]
        shared: dict = {}

        def record(seed: int) -> dict:
            if not shared:
                shared["base"] = base if name == "Original" else self._features(model)
                shared["outputs"] = evaluate_splits(model, self.splits)  # deterministic: once for all seeds
            return {**evaluate(model, self.splits, self.config, seed, shared["base"], shared["outputs"]), "cost": cost}

        runs = []
        for seed in self.config.seeds:
            spec = {"reference": name}
            cell = self.cells.get(name, spec, seed)
            if cell is None:
                cell = {"record": record(seed)}
                self.cells.put(name, spec, seed, cell)
            runs.append(cell["record"])
        return runs

    def _method_cell(
        self, method_config: MethodConfig, seed: int, original: nn.Module, base: FeatureSet | None, first: bool
    ) -> dict:
        """Unlearn with one method and seed, evaluate, and for the first seed save the edit and draw the plots."""
        head = self.config.model.head
        method = self.method(method_config, seed)
        unlearned = method.unlearn(original, self.splits, head=head)
        edit = split_for_probe(unlearned, head)[1]
        # an edit at the head leaves h unchanged, so the Original's features serve; otherwise h changed
        at_head = isinstance(method, FeatureEdit) and method.at_head
        unlearned_base = base if at_head else self._features(unlearned)
        record = evaluate(unlearned, self.splits, self.config, seed, unlearned_base)
        record["cost"] = method.cost.summary()
        # method diagnostics: rank of P (ESC: k), expert load balance, samples read under the budget
        for extra in ("rank", "load_cv", "samples"):
            if getattr(method, extra, None) is not None:
                record[extra] = getattr(method, extra)
        cell = {"record": record}
        if first and at_head and can_save(method.layer):  # an edit in front of the head, for `unlearn apply`
            save_edit(method, self.out_dir / "edits" / slug(method_config.row), seed=seed)
        if first and self.config.eval.plots:
            cell["plots"] = self._plots(method_config.row, base, unlearned_base, edit)
        return cell

    def method(self, method_config, seed: int) -> Method:
        """The method of this config, seeded with the run's seed unless the config fixes one."""
        params = dict(method_config.params)
        cls = METHODS.get(method_config.name)
        accepted = inspect.signature(cls.__init__).parameters if cls is not None else {}
        if "seed" in accepted:
            params.setdefault("seed", seed)
        if "progress" in accepted:
            params.setdefault("progress", self.progress)
        return build_method(method_config.name, **params)

    def _relative(self, path) -> str:
        return str(Path(path).relative_to(self.out_dir))

    def _plots(self, row: str, before: FeatureSet, after_base: FeatureSet, edit: nn.Module) -> list[str]:
        """Prototype cosine heatmap and 2-D embedding of the head's input, before and after unlearning."""
        forget, k = self.config.forget_classes, self.data.num_classes
        train_x, train_y = joined(before, ("D_f", "D_r"))
        after_x = edited(edit, joined(after_base, ("D_f", "D_r"))[0])
        test_x, test_y = joined(before, ("D_ft", "D_rt"))
        after_test_x = edited(edit, joined(after_base, ("D_ft", "D_rt"))[0])
        plot_dir = self.out_dir / "plots"
        return [
            self._relative(
                plots.plot_prototype_cosine(
                    class_means(train_x, train_y, k, forget),
                    class_means(after_x, train_y, k, forget),
                    forget,
                    plot_dir / f"prototypes_{slug(row)}.png",
                    class_names=self.data.class_names,
                    method=row,
                )
            ),
            self._relative(
                plots.plot_embedding(
                    test_x,
                    after_test_x,
                    test_y,
                    forget,
                    plot_dir / f"embedding_{slug(row)}.png",
                    method=self.config.eval.embedding,
                    class_names=self.data.class_names,
                    title=row,
                )
            ),
        ]


def fit_edit(
    config: ExperimentConfig,
    output: str | Path,
    row: str | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> dict:
    """Fit one feature-level method of `config` on its training data and save the edit (`unlearn fit`).

    Under `torchrun` every rank passes over its shard of the data, the per-class sums are all-reduced
    (methods/prototypes.py), every rank builds the same edit, and rank 0 writes it with its cost. The
    model is `checkpoint`, else the config's Original (rank 0 trains or loads it first, the others then
    read the cache).
    """
    device = resolve_device(config.device)
    distributed.init_from_env(device)
    config.device = str(distributed.local_device(device))
    main = distributed.rank() == 0
    experiment = Experiment(config, progress=progress and main)
    rows = [method for method in config.methods if row in (None, method.row)]
    if not rows:
        raise UnlearnError(f"the config has no method {row!r}; its methods are {[m.row for m in config.methods]}.")
    method = experiment.method(rows[0], config.seeds[0])
    if not isinstance(method, FeatureEdit) or not method.at_head:
        raise UnlearnError(f"{rows[0].row} is not an edit in front of the head; `unlearn fit` saves such edits only.")
    if checkpoint:
        model = load_checkpoint(experiment.build().to(experiment.device), checkpoint)
    else:
        with distributed.main_first():
            model = experiment.original()[0]
    features, _ = split_model(model, config.model.head)
    meter = CostMeter()
    with meter.phase("fit"):
        method.fit(features, experiment.splits.train(), config.forget_classes, experiment.splits.num_classes)
    world_size = distributed.world_size()
    summary = {
        "method": rows[0].row,
        "world_size": world_size,
        "rank": distributed.rank(),
        "device": config.device,
        **meter.summary(),
    }
    if main:
        save_edit(method, output, seed=config.seeds[0], world_size=world_size, fit_time_s=summary["time_s"])
    distributed.barrier()
    return summary


def run_experiment(config: ExperimentConfig, progress: bool = True, resume: bool = False) -> dict:
    """Run a config end to end and write metrics.json, report.md and plots to its output_dir.

    resume=True reads finished (method, seed) cells of an earlier run of the same config back from
    `output_dir/cells/` instead of recomputing them.
    """
    return Experiment(config, progress, resume).run()


def evaluate_saved(config: ExperimentConfig, path: str | Path, kr: bool = False, seed: int | None = None) -> dict:
    """Accuracies on D_f, D_r, D_ft, D_rt, HM and HM_t (and KR with `kr`) of a model on disk (`unlearn eval`).

    `path` is a model that `unlearn apply` wrote (.safetensors with its .json manifest: the edit is rebuilt
    on a fresh build of the config's model) or a plain state_dict (.pt, e.g. the Original), evaluated on the
    config's data and forget request. KR probes at the config's `eval.kr_lrs` with `seed` (default: its first).
    """
    path = Path(path)
    if kr and not config.eval.kr_lrs:
        raise UnlearnError("--kr needs probe learning rates: set eval.kr_lrs in the config, e.g. [0.1, 0.01, 0.001].")
    experiment = Experiment(config, progress=False)
    fresh = experiment.build()
    model = load_model(fresh, path) if path.suffix == ".safetensors" else load_checkpoint(fresh, path)
    model = model.to(experiment.device).eval()
    seed = config.seeds[0] if seed is None else seed
    seed_everything(seed)
    record, _ = evaluate_splits(model, experiment.splits)
    result = {
        "model": str(path),
        "config": config.name,
        "dataset": experiment.data.name,
        "task": config.task,
        "forget_classes": config.forget_classes,
        "split_sizes": {name: len(getattr(experiment.splits, name)) for name in SPLIT_NAMES},
        "device": str(experiment.device),
        **record,
    }
    if kr:
        splits, eval_config = experiment.splits, config.eval
        lrs = tuple(eval_config.kr_lrs)
        result["kr"] = knowledge_retention(
            model, splits, lrs, eval_config.kr_epochs, eval_config.kr_batch_size, seed, config.model.head
        )
        result["kr_seed"] = seed
    return result
