"""One experiment end to end: config -> data + model -> methods -> evaluation -> report files."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from unlearn.config import ExperimentConfig, config_to_dict
from unlearn.data import load_dataset
from unlearn.data.base import LabeledTensors
from unlearn.data.splits import SPLIT_NAMES, ForgetSplits, split_by_class
from unlearn.eval.cost import CostMeter
from unlearn.eval.kr import FeatureSet, knowledge_retention, split_features
from unlearn.eval.metrics import evaluate_splits
from unlearn.eval.mia import MIA_DEFINITION, mia_score
from unlearn.methods import METHODS, FeatureEdit, build_method
from unlearn.methods.prototypes import collect_prototypes
from unlearn.models import build_model
from unlearn.models.split import split_for_probe, split_model
from unlearn.models.train import load_checkpoint, train_cached
from unlearn.report import plots
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


def edited(edit: nn.Module, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([edit(chunk).cpu() for chunk in features.split(1024)])


class Experiment:
    """Holds what every method of one config shares: data, splits, the Original model and its features."""

    def __init__(self, config: ExperimentConfig, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.device)
        self.out_dir = Path(config.output_dir)
        self.data = load_dataset(config.data.name, **config.data.params)
        self.splits = split_by_class(self.data, config.forget_classes)
        self.references: dict[str, tuple[nn.Module, dict]] = {}

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
        cost["cached"] = cached
        return model, cost

    def reference_models(self) -> dict[str, tuple[nn.Module, dict]]:
        """Original (trained on D, or the config's checkpoint) and Retrain (trained on D_r only)."""
        config = self.config
        key = {
            "data": config.data.name,
            "data_params": config.data.params,
            "model": config.model.name,
            "model_params": config.model.params,
        }
        if config.model.checkpoint:
            self.references["Original"] = (load_checkpoint(self.build().to(self.device), config.model.checkpoint), {})
        else:
            self.references["Original"] = self._trained("Original", self.data.train, {**key, "classes": "all"})
        if "Retrain" in config.references:
            self.references["Retrain"] = self._trained(
                "Retrain", self.splits.D_r, {**key, "without": config.forget_classes}
            )
        return self.references

    def run(self) -> dict:
        config = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        references = self.reference_models()
        original = references["Original"][0]
        features, _ = split_model(original, config.model.head)
        base = split_features(split_for_probe(original, config.model.head)[0], self.splits)
        results: dict[str, dict] = {}
        for name in config.references:
            model, cost = references[name]
            if name == "Original":
                model_base = base
            else:
                model_base = split_features(split_for_probe(model, config.model.head)[0], self.splits)
            outputs = evaluate_splits(model, self.splits)  # deterministic: once for all seeds
            runs = [
                {**evaluate(model, self.splits, config, seed, model_base, outputs), "cost": cost}
                for seed in config.seeds
            ]
            results[name] = {"runs": runs}
        plot_paths = []
        bar = tqdm(total=len(config.methods) * len(config.seeds), desc="unlearn + evaluate", disable=not self.progress)
        for method_config in config.methods:
            runs, first_edit = [], None
            for seed in config.seeds:
                bar.set_postfix(method=method_config.row, seed=seed, refresh=False)
                method = self._method(method_config, seed)
                method.fit(features, self.data.train, config.forget_classes, num_classes=self.data.num_classes)
                unlearned = method.apply(original, head=config.model.head)
                record = evaluate(unlearned, self.splits, config, seed, base)
                record["cost"] = method.cost.summary()
                if getattr(method, "rank", None) is not None:
                    record["rank"] = method.rank
                runs.append(record)
                if first_edit is None:  # plots show the first seed's edit
                    first_edit = split_for_probe(unlearned, config.model.head)[1]
                bar.update()
            results[method_config.row] = {"runs": runs}
            if config.eval.plots:
                plot_paths += self._plots(method_config.row, first_edit, base)
        bar.close()
        for result in results.values():
            result["summary"] = summarize_runs(result["runs"])
        metrics = {
            "name": config.name,
            "dataset": self.data.name,
            "model": config.model.name,
            "num_classes": self.data.num_classes,
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
        metrics["plots"] = plot_paths
        write_report(metrics, self.out_dir)
        return metrics

    def _method(self, method_config, seed: int) -> FeatureEdit:
        """The method of this config, seeded with the run's seed unless the config fixes one."""
        params = dict(method_config.params)
        cls = METHODS.get(method_config.name)
        if cls is not None and "seed" in inspect.signature(cls.__init__).parameters:
            params.setdefault("seed", seed)
        return build_method(method_config.name, **params)

    def _relative(self, path) -> str:
        return str(Path(path).relative_to(self.out_dir))

    def _plots(self, row: str, edit: nn.Module, base: FeatureSet) -> list[str]:
        """Prototype cosine heatmap and 2-D embedding, before and after this method's edit."""
        values, labels = base
        forget, k = self.config.forget_classes, self.data.num_classes
        train_x = torch.cat([values["D_f"], values["D_r"]])
        train_y = torch.cat([labels["D_f"], labels["D_r"]])
        before = class_means(train_x, train_y, k, forget)
        after = class_means(edited(edit, train_x), train_y, k, forget)
        slug = "".join(c if c.isalnum() else "_" for c in row).lower()
        plot_dir = self.out_dir / "plots"
        test_x = torch.cat([values["D_ft"], values["D_rt"]])
        test_y = torch.cat([labels["D_ft"], labels["D_rt"]])
        return [
            self._relative(
                plots.plot_prototype_cosine(
                    before, after, forget, plot_dir / f"prototypes_{slug}.png", class_names=self.data.class_names
                )
            ),
            self._relative(
                plots.plot_embedding(
                    test_x,
                    edited(edit, test_x),
                    test_y,
                    forget,
                    plot_dir / f"embedding_{slug}.png",
                    method=self.config.eval.embedding,
                )
            ),
        ]


def run_experiment(config: ExperimentConfig, progress: bool = True) -> dict:
    """Run a config end to end and write metrics.json, report.md and plots to its output_dir."""
    return Experiment(config, progress).run()
