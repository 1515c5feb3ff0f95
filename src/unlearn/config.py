"""Experiment configs: YAML in, validated dataclasses out; an unknown key is an error naming the valid ones."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unlearn.errors import UnlearnError
from unlearn.models.train import TrainConfig


@dataclass
class DataConfig:
    name: str = "digits"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "digits_cnn"  # a registered model, or your own class as "package.module:Name" (YAML key `class`)
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # a state_dict to load instead of training the Original model
    head: str | None = None  # name of the classification head; auto-detected when None


@dataclass
class MethodConfig:
    name: str
    label: str | None = None  # row name in the report (defaults to name)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> str:
        return self.label or self.name


@dataclass
class EvalConfig:
    kr_lrs: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.001])
    kr_epochs: int = 10
    kr_batch_size: int = 64
    mia: bool = True
    plots: bool = True
    embedding: str = "pca"  # pca or tsne


@dataclass
class AuditConfig:
    """Settings of `unlearn audit` (attacks of unlearn.eval.audit; each docstring there gives its threat model)."""

    kr_lrs: list[float] = field(default_factory=lambda: [0.1, 0.01, 0.001])  # the paper's KR probe
    kr_epochs: int = 10
    logreg_max_iter: int = 2000  # converged logistic regression on standardised features
    mlp_hidden: list[list[int]] = field(default_factory=lambda: [[256], [256, 256]])
    mlp_max_epochs: int = 200  # with early stopping on a 10 % validation split
    knn_ks: list[int] = field(default_factory=lambda: [1, 5, 20])
    knn_metrics: list[str] = field(default_factory=lambda: ["euclidean", "cosine"])
    few_shot: list[float] = field(default_factory=lambda: [0.1, 100])  # labelled forget samples: fraction or count
    passes: int = 8  # repeated queries of one input (stochastic edits)
    relearn_samples: int = 10  # labelled forget samples the relearning attacker finetunes on (+ as many remain)
    relearn_epochs: list[int] = field(default_factory=lambda: [1, 3, 10])  # cumulative budgets
    relearn_lr: float = 0.01
    relearn_batch_size: int = 20  # one step per epoch with the defaults


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    output_dir: str = "runs/experiment"
    cache_dir: str | None = ".cache/unlearn"
    device: str = "auto"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    task: str = "class"  # class: forget `forget_classes`; sample: forget a random `forget_fraction` of D
    forget_classes: list[int] = field(default_factory=lambda: [4])
    forget_fraction: float = 0.1  # sample task only
    split_seed: int = 0  # sample task only: which random samples are forgotten
    references: list[str] = field(default_factory=lambda: ["Original", "Retrain"])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig("MoRE"), MethodConfig("ESC")])
    eval: EvalConfig = field(default_factory=EvalConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def __post_init__(self) -> None:
        unknown_refs = sorted(set(self.references) - {"Original", "Retrain"})
        if unknown_refs:
            raise UnlearnError(f"references {unknown_refs} are unknown; use Original and/or Retrain.")
        if not self.seeds:
            raise UnlearnError("seeds is empty: give at least one seed, e.g. seeds: [0].")
        if self.task not in ("class", "sample"):
            raise UnlearnError(f"task must be 'class' or 'sample', got {self.task!r}.")
        if self.eval.embedding not in ("pca", "tsne"):
            raise UnlearnError(f"eval.embedding must be 'pca' or 'tsne', got {self.eval.embedding!r}.")


def _build(cls: type, values: Any, where: str):
    """Instantiate dataclass `cls` from a mapping, recursing into nested dataclasses and lists of them."""
    if dataclasses.is_dataclass(values):
        return values
    if not isinstance(values, dict):
        raise UnlearnError(f"{where or 'the config'} must be a mapping, got {type(values).__name__}: {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UnlearnError(
            f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid keys here: {sorted(fields)}"
        )
    kwargs = {}
    for key, value in values.items():
        nested = NESTED.get((cls, key))
        if nested is not None and isinstance(value, list):
            kwargs[key] = [_build(nested, item, f"{where}{key}[{i}].") for i, item in enumerate(value)]
        elif nested is not None:
            kwargs[key] = _build(nested, value, f"{where}{key}.")
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise UnlearnError(f"bad config at {where or 'top level'}: {error}") from error


NESTED: dict[tuple[type, str], type] = {
    (ExperimentConfig, "data"): DataConfig,
    (ExperimentConfig, "model"): ModelConfig,
    (ExperimentConfig, "train"): TrainConfig,
    (ExperimentConfig, "methods"): MethodConfig,
    (ExperimentConfig, "eval"): EvalConfig,
    (ExperimentConfig, "audit"): AuditConfig,
}


def model_class_key(values: dict) -> dict:
    """`model: {class: "package.module:Name", ...}` (your own model class) is stored as `model.name`."""
    model = values.get("model")
    if not isinstance(model, dict) or "class" not in model:
        return values
    if "name" in model:
        raise UnlearnError(
            f"model has both name {model['name']!r} and class {model['class']!r}; give one: a registered name "
            "or your own class as 'package.module:Name'."
        )
    model = {("name" if key == "class" else key): value for key, value in model.items()}
    if not isinstance(model["name"], str) or ":" not in model["name"]:
        raise UnlearnError(f"model.class must be 'package.module:Name', got {model['name']!r}.")
    return {**values, "model": model}


def config_from_dict(values: dict) -> ExperimentConfig:
    """Validated config from a plain mapping (e.g. parsed YAML)."""
    return _build(ExperimentConfig, model_class_key(values), "")


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing file or invalid YAML is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UnlearnError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise UnlearnError(f"config file {path} must hold a mapping of keys to values, got {type(values).__name__}.")
    return values


def load_config(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read a YAML config; `overrides` (top-level keys) replace values from the file."""
    values = read_yaml(path)
    values.update(overrides or {})
    return config_from_dict(values)


def config_to_dict(config: ExperimentConfig) -> dict:
    return dataclasses.asdict(config)
