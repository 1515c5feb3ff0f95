"""Argument checks at the public boundary: strict types from annotations, ranges from one table by name.

Every config section (a dataclass), every method's `__init__` and every params dict checked against a
function's signature goes through `check_fields`, so one rule holds everywhere:

- an `int` is an int (not `True`, `2.5` or `"8"`); a `float` is a finite real number (an int is fine);
  a `bool` is `True`/`False` (not `"no"`); a `str` is a string; `list[X]` is a list (or tuple) of X;
- a value whose name is in `RULES` must also be in the rule's range (e.g. `lr > 0`, `batch_size >= 1`,
  `percent` in (0, 100]); a list value must have every element in range.

Class ids (`class_ids`) are non-negative integers; a bare int means a one-class list. Files the library
reads back (edit manifests, metrics.json) get a structural check here too, so a corrupt one is one clear
`UnlearnError` instead of a KeyError or a silently wrong answer.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import types
import typing
from collections import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn.errors import UnlearnError


@dataclass(frozen=True)
class Range:
    """An interval rule: lo < / <= value < / <= hi (None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"in {left}{self.lo:g}, {self.hi:g}{right}"


POSITIVE = Range(0, lo_open=True)
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1, lo_open=True, hi_open=True)

# Ranges by parameter name, for configs and method arguments alike ("Owner.name" overrides "name").
# A name ending in "batch_size" is >= 1. Add a row here when a new parameter has a range.
RULES: dict[str, Range] = {
    "epochs": AT_LEAST_1,
    "ConditionalMoRE.epochs": AT_LEAST_0,  # 0: the pinv router, no training
    "steps": AT_LEAST_1,
    "lr": POSITIVE,
    "lrs": POSITIVE,
    "kr_lrs": POSITIVE,
    "kr_epochs": AT_LEAST_1,
    "relearn_lr": POSITIVE,
    "relearn_epochs": AT_LEAST_1,
    "relearn_samples": AT_LEAST_1,
    "LLMEvalConfig.relearn_steps": AT_LEAST_0,  # 0: skip the relearning attack
    "weight_decay": AT_LEAST_0,
    "warmup_epochs": AT_LEAST_0,
    "num_experts": AT_LEAST_1,
    "percent": Range(0, 100, lo_open=True),
    "explained_variance": Range(0, 1, lo_open=True),
    "k": AT_LEAST_1,
    "rtol": Range(0, 1, lo_open=True, hi_open=True),
    "seed": AT_LEAST_0,
    "seeds": AT_LEAST_0,
    "split_seed": AT_LEAST_0,
    "forget_classes": AT_LEAST_0,
    "target_class": AT_LEAST_0,
    "forget_fraction": FRACTION,
    "test_fraction": FRACTION,
    "train_size": AT_LEAST_1,
    "test_size": AT_LEAST_1,
    "logreg_max_iter": AT_LEAST_1,
    "mlp_hidden": AT_LEAST_1,
    "mlp_max_epochs": AT_LEAST_1,
    "knn_ks": AT_LEAST_1,
    "few_shot": POSITIVE,
    "passes": AT_LEAST_1,
    "probe_max_train": AT_LEAST_1,
    "query_max_train": AT_LEAST_1,
    "query_max_test": AT_LEAST_1,
    "width": POSITIVE,  # AllCNN: a channel multiplier; diffusion: pixels
    "height": AT_LEAST_1,
    "depth": AT_LEAST_1,
    "prompts_per_artist": AT_LEAST_1,
    "grid_prompts": AT_LEAST_0,
    "probe_timestep": AT_LEAST_0,
    "guidance_scale": AT_LEAST_0,
    "uce_lambda": AT_LEAST_0,
    "top_m": AT_LEAST_1,
    "calibration_tokens": AT_LEAST_1,
    "num_hashes": AT_LEAST_1,
    "bank_size": AT_LEAST_1,
    "threshold": Range(0, 1),
    "temperature": POSITIVE,
    "max_grad_norm": POSITIVE,
}


def rule_for(owner: str, name: str) -> Range | None:
    """The range rule of parameter `name` of `owner` (a class or section name), if any."""
    rule = RULES.get(f"{owner}.{name}", RULES.get(name))
    if rule is None and name.endswith("batch_size"):
        return AT_LEAST_1
    return rule


PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "None"}


def _type_name(annotation: Any) -> str:
    if annotation in NAMES:
        return NAMES[annotation]
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def type_error(value: Any, annotation: Any) -> str | None:
    """Why `value` is not of `annotation` (a message), or None when it is. Unknown annotations pass."""
    if annotation is Any or annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if any(type_error(value, arg) is None for arg in args):
            return None
        return f"must be {' or '.join(_type_name(arg) for arg in args)}"
    if annotation is type(None):
        return None if value is None else "must be None"
    if annotation is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if annotation is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "must be an integer"
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if annotation is str:
        return None if isinstance(value, str) else "must be a string"
    if origin in (list, tuple, abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"must be a list{f' of {PLURALS.get(args[0], _type_name(args[0]))}' if args else ''}"
        item = args[0] if args and (origin is not tuple or args[-1] is Ellipsis) else None
        for index, element in enumerate(value):
            problem = type_error(element, item) if item is not None else None
            if problem:
                return _at(index, problem, element)
        return None
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return "must be a mapping"
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        for key, element in value.items():
            problem = type_error(key, key_type) or type_error(element, value_type)
            if problem:
                return _at(repr(key), problem, element)
        return None
    if origin is typing.Literal:
        return None if value in args else f"must be one of {list(args)}"
    if isinstance(annotation, type) and not isinstance(value, annotation):
        return f"must be a {annotation.__name__}"
    return None


def _at(index: Any, problem: str, element: Any) -> str:
    """A problem of one element of a list or mapping, with its index and value."""
    if problem.endswith(")"):  # already names the value (a nested element)
        return f"[{index}]{'' if problem.startswith('[') else ' '}{problem}"
    return f"[{index}] {problem}, got {element!r} ({type(element).__name__})"


def range_error(value: Any, rule: Range) -> str | None:
    """Why `value` (a number or a nested list of numbers) is out of `rule`, or None."""
    if isinstance(value, (list, tuple)):
        return next((_at(i, e, item) for i, item in enumerate(value) if (e := range_error(item, rule))), None)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return None if rule.holds(value) else f"must be {rule}"


def check_fields(owner: str, values: dict[str, Any], hints: dict[str, Any], where: str = "") -> None:
    """Type and range of every entry of `values` (names → annotations in `hints`); raise on the first bad one."""
    for name, value in values.items():
        problem = type_error(value, hints.get(name, Any))
        if problem is None and (rule := rule_for(owner, name)) is not None:
            problem = range_error(value, rule)
        if problem:
            got = "" if problem.endswith(")") else f", got {value!r} ({type(value).__name__})"
            raise UnlearnError(f"{where}{name}{'' if problem.startswith('[') else ' '}{problem}{got}.")


def annotations_of(target: Callable) -> dict[str, Any]:
    """Resolved annotations of a function or class (its __init__); names that do not resolve are left out."""
    function = target.__init__ if isinstance(target, type) else target
    function = inspect.unwrap(function)
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - some annotation names only exist for type checkers: resolve one by one
        hints = {}
        namespace = getattr(function, "__globals__", {})
        for name, text in getattr(function, "__annotations__", {}).items():
            try:
                hints[name] = eval(text, namespace) if isinstance(text, str) else text  # noqa: S307
            except Exception:  # noqa: BLE001
                continue
        return hints


def check_args(target: Callable, params: dict[str, Any], what: str) -> None:
    """Types and ranges of `params` (keyword arguments for `target`, a class or function)."""
    owner = target.__name__ if isinstance(target, type) else getattr(target, "__qualname__", "")
    check_fields(owner, params, annotations_of(target), f"{what}: ")


def checked_init(cls: type) -> type:
    """Wrap `cls.__init__` (when the class defines one) so every argument is checked before it runs.

    A class decorator of the method bases, and called by their `__init_subclass__`, so a new method is
    checked just by subclassing.
    """
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "__checked__", False):
        return cls
    signature = inspect.signature(init)
    hints = annotations_of(init)
    variadic = {n for n, p in signature.parameters.items() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as error:
            raise UnlearnError(f"{getattr(type(self), 'name', cls.__name__)}: {error}.") from None
        given = {name: value for name, value in list(bound.arguments.items())[1:] if name not in variadic}
        check_fields(cls.__name__, given, hints, f"{getattr(type(self), 'name', cls.__name__)}: ")
        init(self, *args, **kwargs)

    wrapper.__checked__ = True
    cls.__init__ = wrapper
    return cls


def checked_fit(cls: type) -> None:
    """Wrap `cls.fit` (when the class defines one) so `forget_classes` is a list of class ids and
    `num_classes` a positive int before any data is read."""
    fit = cls.__dict__.get("fit")
    if fit is None or getattr(fit, "__checked__", False) or getattr(fit, "__isabstractmethod__", False):
        return
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError as error:
            raise UnlearnError(f"{cls.__name__}.fit: {error}.") from None
        arguments = bound.arguments
        if "forget_classes" in arguments:
            arguments["forget_classes"] = class_ids(arguments["forget_classes"], f"{cls.__name__}.fit forget_classes")
        num_classes = arguments.get("num_classes")
        if num_classes is not None:
            check_fields(cls.__name__, {"num_classes": num_classes}, {"num_classes": int}, f"{cls.__name__}.fit: ")
            if num_classes < 2:
                raise UnlearnError(f"{cls.__name__}.fit: num_classes must be >= 2, got {num_classes}.")
        return fit(*bound.args, **bound.kwargs)

    wrapper.__checked__ = True
    cls.fit = wrapper


def class_ids(value: Any, what: str = "forget_classes") -> list[int]:
    """Integer class ids from a list (or a bare int, meaning one class); bools, floats, strings, None refused."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # a tensor or numpy array
        value = value.tolist()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple, set, frozenset, range)):
        raise UnlearnError(f"{what} must be a list of integer class ids, e.g. [4]; got {value!r}.")
    ids = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise UnlearnError(
                f"{what} must hold integer class ids, got {item!r} ({type(item).__name__}) in {list(value)!r}."
            )
        if item < 0:
            raise UnlearnError(f"{what} [{item}] are not class ids: class ids are integers >= 0.")
        ids.append(int(item))
    return ids


def check_output_dir(path: str | Path, what: str = "output_dir") -> None:
    """An output directory must be a directory or not exist yet (an existing file is refused)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UnlearnError(f"{what} {str(path)!r} is an existing file, not a directory; choose another path.")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UnlearnError(f"{what} {str(path)!r} lies under the file {str(parent)!r}; choose another path.")


def check_device(device: Any, what: str = "device") -> None:
    """A device name torch understands ("auto", "cpu", "cuda", "cuda:1", "mps", ...), checked without using it."""
    import torch

    if device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UnlearnError(f"{what} {device!r} is not a torch device; use cpu, cuda, cuda:N or auto.") from error


EDIT_LAYERS = ("MoRELayer", "ConditionalMoRELayer", "GatedMoRELayer", "LinearEdit", "Sequential")

# What an edit manifest (`edit.json`) may hold, by key: the JSON type of each value.
MANIFEST_TYPES: dict[str, Any] = {
    "format": int,
    "layer": str,
    "method": str,
    "forget_classes": list[int],
    "seed": int,
    "prototype_sha256": str,
    "tensors_sha256": str,
    "feature_dim": int,
    "num_experts": int,
    "parts": list[dict],
    "remap": dict,  # MoRE-G: its MoRELayer, described like a part
    "gate": str,
    "lift": bool,
    "target": str,
    "tau_low": float,
    "tau_high": float,
    "world_size": int,
    "fit_time_s": float,
}


def check_manifest(manifest: Any, path: str | Path) -> dict:
    """Structure and value types of an edit manifest (or one part of it); returns it."""
    if not isinstance(manifest, dict):
        raise UnlearnError(f"manifest {path} must hold a JSON object, got {type(manifest).__name__}.")
    for key, value in manifest.items():
        problem = type_error(value, MANIFEST_TYPES.get(key, Any))
        if problem is None and key in ("feature_dim", "num_experts", "seed", "forget_classes"):
            problem = range_error(value, AT_LEAST_1 if key in ("feature_dim", "num_experts") else AT_LEAST_0)
        if (
            problem is None
            and key == "prototype_sha256"
            and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value))
        ):
            problem = "must be a 64-digit lowercase hex SHA-256"
        if problem:
            raise UnlearnError(f"manifest {path}: {key} {problem}, got {value!r}.")
    if "layer" in manifest and manifest["layer"] not in EDIT_LAYERS:
        raise UnlearnError(f"manifest {path}: unknown edit layer type {manifest['layer']!r}.")
    for part in manifest.get("parts", []):
        check_manifest(part, path)
    return manifest


METRICS_KEYS = {"name": str, "dataset": str, "model": str, "num_classes": int, "task": str, "seeds": list}


def check_metrics(metrics: Any, path: str | Path) -> dict:
    """A metrics.json as `unlearn run` writes it: the run's identity keys, and a non-empty `methods` mapping
    whose rows hold a list of per-seed runs (accuracies, HM and MIA numbers) and a summary of mean/std entries."""
    if not isinstance(metrics, dict):
        raise UnlearnError(f"{path} must hold a JSON object, got {type(metrics).__name__}.")
    methods = metrics.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise UnlearnError(f"{path} has no `methods` results: it is not a metrics.json written by `unlearn run`.")
    for key, kind in METRICS_KEYS.items():
        if type_error(metrics.get(key), kind):
            raise UnlearnError(
                f"{path}: {key} must be a {kind.__name__}, got {metrics.get(key)!r}; it is not a complete "
                "metrics.json written by `unlearn run`."
            )
    for row, result in methods.items():
        runs = result.get("runs") if isinstance(result, dict) else None
        if not isinstance(runs, list) or not runs or not all(isinstance(run, dict) for run in runs):
            raise UnlearnError(f"{path}: methods.{row} has no list of runs; the file is damaged.")
        for run in runs:
            numbers = {**run.get("acc", {}), **{k: run[k] for k in ("HM", "MIA") if run.get(k) is not None}}
            if type_error(numbers, dict[str, float]):
                raise UnlearnError(f"{path}: methods.{row} has a run with non-numeric metrics; the file is damaged.")
        summary = result.get("summary", {})
        plain = {k: v for k, v in summary.items() if k not in ("kr", "phases")} if isinstance(summary, dict) else None
        if plain is None or any(not isinstance(v, dict) or type_error(v.get("mean"), float) for v in plain.values()):
            raise UnlearnError(f"{path}: methods.{row}.summary must map metrics to mean/std; the file is damaged.")
    return metrics
