"""Property-based tests of the boundary checks: any value either loads (when an independent oracle says it is
valid) or raises UnlearnError, never another exception and never a silent acceptance of a wrong value."""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import fields

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn.config import AuditConfig, EvalConfig, ExperimentConfig, config_from_dict, load_config
from unlearn.errors import UnlearnError
from unlearn.methods import ESC, Finetune, MoRE
from unlearn.models.train import TrainConfig
from unlearn.validate import class_ids

SETTINGS = settings(max_examples=50, deadline=None)

BASE = {"cache_dir": None, "seeds": [0], "forget_classes": [4], "methods": [{"name": "MoRE"}]}


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def int_at_least(n):
    return lambda v: is_int(v) and v >= n


def positive(v) -> bool:
    return is_number(v) and v > 0


def list_of(check, non_empty=False):
    return lambda v: isinstance(v, list) and (v or not non_empty) and all(check(x) for x in v)


# The oracle: what each config key accepts, written independently of unlearn.validate.
ORACLE = {
    "train.epochs": int_at_least(1),
    "train.lr": positive,
    "train.batch_size": int_at_least(1),
    "train.augment": lambda v: isinstance(v, bool),
    "train.weight_decay": lambda v: is_number(v) and v >= 0,
    "eval.kr_epochs": int_at_least(1),
    "eval.kr_batch_size": int_at_least(1),
    "eval.kr_lrs": list_of(positive),
    "eval.mia": lambda v: isinstance(v, bool),
    "seeds": list_of(int_at_least(0), non_empty=True),
    "forget_classes": list_of(int_at_least(0), non_empty=True),
    "audit.knn_ks": list_of(int_at_least(1)),
    "audit.relearn_lr": positive,
    "name": lambda v: isinstance(v, str),
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
BOUNDARY = [0, 0.0, -1, 1, 1.5, 100, 101, "1", True, False, None, [], [0], [1], [-1], [0.0], [True], ["a"], [1.5]]
values = st.one_of(
    st.sampled_from(BOUNDARY),
    scalars,
    st.lists(st.one_of(st.integers(-3, 20), st.floats(-2, 2), st.booleans(), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def with_value(path: str, value) -> dict:
    config = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


@SETTINGS
@given(st.sampled_from(sorted(ORACLE)), values)
def test_config_value_loads_iff_the_oracle_accepts_it(path, value):
    config = with_value(path, value)
    if ORACLE[path](value):
        config_from_dict(config)
    else:
        with pytest.raises(UnlearnError):
            config_from_dict(config)


SECTIONS = {"": ExperimentConfig, "train.": TrainConfig, "eval.": EvalConfig, "audit.": AuditConfig}


def test_boundary_values_of_every_oracle_key():
    """Every key of the oracle against every boundary value, deterministically (hypothesis samples a few)."""
    for path, valid in ORACLE.items():
        for value in BOUNDARY:
            config = with_value(path, value)
            if valid(value):
                config_from_dict(config)
            else:
                with pytest.raises(UnlearnError):
                    config_from_dict(config)
    for cls, name, valid in METHOD_ORACLE:
        for value in BOUNDARY:
            if valid(value):
                cls(**{name: value})
            else:
                with pytest.raises(UnlearnError):
                    cls(**{name: value})


@SETTINGS
@given(st.text(min_size=1, max_size=8).filter(lambda k: "." not in k), st.sampled_from(sorted(SECTIONS)), values)
def test_unknown_keys_are_refused(key, section, value):
    if key in {f.name for f in fields(SECTIONS[section])}:
        return
    with pytest.raises(UnlearnError, match="unknown config key"):
        config_from_dict(with_value(section + key, value))


@SETTINGS
@given(values)
def test_methods_must_be_a_list_of_mappings(value):
    config = {**BASE, "methods": value}
    ok = isinstance(value, list) and value == []  # an empty list is valid (references only)
    if ok:
        config_from_dict(config)
    else:
        with pytest.raises(UnlearnError):
            config_from_dict(config)


@SETTINGS
@given(values)
def test_class_ids_accepts_exactly_lists_of_non_negative_ints(value):
    valid = (is_int(value) and value >= 0) or (
        isinstance(value, (list, tuple)) and all(is_int(v) and v >= 0 for v in value)
    )
    if valid:
        ids = class_ids(value)
        assert all(type(i) is int for i in ids)
    else:
        with pytest.raises(UnlearnError):
            class_ids(value)


METHOD_ORACLE = [
    (MoRE, "num_experts", int_at_least(1)),
    (MoRE, "orthogonal", lambda v: isinstance(v, bool)),
    (MoRE, "seed", int_at_least(0)),
    (ESC, "percent", lambda v: is_number(v) and 0 < v <= 100),
    (ESC, "k", lambda v: v is None or int_at_least(1)(v)),
    (Finetune, "epochs", int_at_least(1)),
    (Finetune, "lr", positive),
    (Finetune, "batch_size", int_at_least(1)),
]


@SETTINGS
@given(st.sampled_from(range(len(METHOD_ORACLE))), values)
def test_method_argument_is_accepted_iff_the_oracle_accepts_it(index, value):
    cls, name, valid = METHOD_ORACLE[index]
    if valid(value):
        cls(**{name: value})
    else:
        with pytest.raises(UnlearnError):
            cls(**{name: value})


@SETTINGS
@given(st.sampled_from(["name", "seeds", "train", "eval", "forget_classes", "device"]), scalars)
def test_a_duplicated_yaml_key_is_refused(tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("dup") / "config.yaml"
    text = yaml.safe_dump(BASE)
    path.write_text(text)
    load_config(path)  # the file without the duplicate loads
    line = yaml.safe_dump({key: value})
    path.write_text(text + line + (line if key not in BASE else ""))
    with pytest.raises(UnlearnError, match="duplicate key"):
        load_config(path)
