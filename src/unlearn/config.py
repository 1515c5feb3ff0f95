"""Experiment configs: YAML in, validated dataclasses out; an unknown key is an error naming the valid ones."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unlearn.errors import UnlearnError, check_params
from unlearn.models.train import TrainConfig
from unlearn.validate import check_args, check_device, check_fields, check_output_dir, class_ids


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
    probe_max_train: int | None = None  # training features the probes learn from (seeded subsample; None: all)
    passes: int = 8  # repeated queries of one input (stochastic edits)
    relearn_samples: int = 10  # labelled forget samples the relearning attacker finetunes on (+ as many remain)
    relearn_epochs: list[int] = field(default_factory=lambda: [1, 3, 10])  # cumulative budgets
    relearn_lr: float = 0.01
    relearn_batch_size: int = 20  # one step per epoch with the defaults
    relearn_curve_samples: list[int] = field(default_factory=list)  # more k for the relearning curves (k x steps)
    queries: bool = True  # input-space query attacks and membership detection (unlearn.eval.queries)
    query_max_train: int | None = 600  # inputs of each training split (D_f, D_r) the query attacker uses
    query_max_test: int | None = None  # inputs of each test split the query attacks are scored on (None: all)
    query_copies: int = 8  # jitter: noisy copies per input; repeated: queries per input
    query_jitter: float = 0.1  # jitter σ as a fraction of the inputs' standard deviation
    query_step: float = 0.01  # finite differences: step h, per pixel, as a fraction of the inputs' std
    query_directions: int = 4  # finite differences: random directions per input
    query_path_steps: int = 16  # path: points between an input and the fixed remain input
    block_probes: bool = True  # weight holder: probe every block of the feature extractor


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
        self.forget_classes = class_ids(self.forget_classes)
        if self.task == "class" and not self.forget_classes:
            raise UnlearnError("forget_classes is empty: name at least one class id to forget, e.g. [4].")
        check_output_dir(self.output_dir)
        check_device(self.device)


def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass's fields."""
    return typing.get_type_hints(cls)


def _dataclass_of(annotation: Any) -> tuple[type | None, bool]:
    """(the dataclass a field holds, whether it is a list of them) or (None, False) for a plain field."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation, False
    return None, False


def _build(cls: type, values: Any, where: str):
    """Instantiate dataclass `cls` from a mapping, strictly: unknown keys are refused, every value is checked
    against its field's type and the range rules of `unlearn.validate`, and nested dataclasses (or lists of
    them, from the field annotations) are built the same way. The one config builder of every runner."""
    if dataclasses.is_dataclass(values) and isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise UnlearnError(
            f"{where.rstrip('.') or 'the config'} must be a mapping, got {type(values).__name__}: {values!r}"
        )
    types_ = _field_types(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise UnlearnError(
            f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid keys here: {sorted(fields)}"
        )
    kwargs = {}
    for key, value in values.items():
        nested, is_list = _dataclass_of(types_[key])
        if nested is not None and is_list:
            if not isinstance(value, list):
                raise UnlearnError(
                    f"{where}{key} must be a list (one '- name: ...' entry per item), got {type(value).__name__}: "
                    f"{value!r}"
                )
            kwargs[key] = [_build(nested, item, f"{where}{key}[{i}].") for i, item in enumerate(value)]
        elif nested is not None:
            kwargs[key] = _build(nested, value, f"{where}{key}.")
        else:
            check_fields(cls.__name__, {key: value}, types_, where)
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise UnlearnError(f"bad config at {where or 'top level'}: {error}") from error


def check_experiment(config: ExperimentConfig) -> ExperimentConfig:
    """Check what the config names before anything trains: dataset, model and every method with its params.

    Every method is built once (cheap: no data is touched), so an unknown name, an unknown parameter or a
    bad value fails here and not after Original and Retrain have trained.
    """
    from unlearn.data import DATASETS
    from unlearn.methods import build_method
    from unlearn.models import DERIVED, MODELS, import_model_class

    if config.data.name not in DATASETS:
        raise UnlearnError(f"unknown dataset {config.data.name!r}; valid names: {sorted(DATASETS)}.")
    loader, fixed = DATASETS[config.data.name]
    check_params(loader, config.data.params, f"dataset {config.data.name!r}", exclude=tuple(fixed))
    check_args(loader, config.data.params, "data.params")
    required = [
        name
        for name, param in inspect.signature(loader).parameters.items()
        if param.default is inspect.Parameter.empty and name not in fixed and name not in config.data.params
    ]
    if required:
        raise UnlearnError(f"dataset {config.data.name!r} needs params {required}; add them under data.params.")
    if ":" in config.model.name:  # your own class, 'package.module:Name'
        model_class = import_model_class(config.model.name)
    elif config.model.name in MODELS:
        model_class = MODELS[config.model.name]
    else:
        raise UnlearnError(
            f"unknown model {config.model.name!r}; valid names: {sorted(MODELS)} or your own 'package.module:Name'."
        )
    check_params(model_class, config.model.params, f"model {config.model.name!r}", exclude=DERIVED)
    check_args(model_class, config.model.params, "model.params")
    rows = [method.row for method in config.methods]
    repeated = sorted({row for row in rows if rows.count(row) > 1})
    if repeated:
        raise UnlearnError(f"methods {repeated} appear more than once; give each a distinct label.")
    for index, method in enumerate(config.methods):
        try:
            build_method(method.name, **method.params)
        except UnlearnError as error:
            raise UnlearnError(f"methods[{index}] ({method.row}): {error}") from error
    return config


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
    """Validated config from a plain mapping (e.g. parsed YAML); see docs/inputs.md for the rules."""
    return check_experiment(_build(ExperimentConfig, model_class_key(values), ""))


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file; a missing, empty or non-UTF-8 file, invalid YAML or a duplicated key is
    a clear error."""
    path = Path(path)
    if not path.is_file():
        raise UnlearnError(f"config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except UnicodeDecodeError as error:
        raise UnlearnError(f"config file {path} is not UTF-8 text ({error}).") from error
    except yaml.YAMLError as error:
        raise UnlearnError(f"config file {path} is not valid YAML: {error}") from error
    if values is None:
        raise UnlearnError(f"config file {path} is empty; see configs/ for examples.")
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
