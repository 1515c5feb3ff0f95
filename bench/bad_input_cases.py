"""The bad-input corpus: what a careful user might get wrong, through the API, the CLI, configs and files.

Every case is data plus a small callable `run(tmp)` that feeds one bad input to the library in the temporary
directory `tmp`. Expected: one clear `UnlearnError` (`expect="error"`), or, where the input is legal but
suspicious, a warning whose text holds `expect_warning`. `bench/bad_inputs.py` replays them all.
"""

from __future__ import annotations

import atexit
import copy
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from unlearn.data.base import ClassificationData, LabeledTensors
from unlearn.errors import UnlearnError

NUM_CLASSES, DIM = 5, 16


@dataclass
class Case:
    id: str
    surface: str  # api | cli | config | file | data
    what: str
    run: Callable[[Path], Any]
    expect_warning: str | None = None  # a substring of the expected warning; None: an UnlearnError is expected


class UsageError(Exception):
    """argparse refused the command line (exit status 2 with a usage message): clear, but not an UnlearnError."""


# ---------------------------------------------------------------- fixtures (tiny, cached per process)


def blobs(num_per_class: int, seed: int) -> LabeledTensors:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=torch.Generator().manual_seed(123)) * 3 + 1
    labels = torch.arange(NUM_CLASSES).repeat_interleave(num_per_class)
    return LabeledTensors(centers[labels] + 0.5 * torch.randn(len(labels), DIM, generator=generator), labels)


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU())
        self.fc = nn.Linear(24, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class HeadFirst(nn.Module):
    """A classifier whose head is registered before its body and has no conventional name."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(24, NUM_CLASSES)
        self.body = nn.Sequential(nn.Linear(DIM, 24), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


@cache
def data() -> ClassificationData:
    return ClassificationData("blobs", blobs(30, 0), blobs(10, 1), NUM_CLASSES, (DIM,))


@cache
def _trained() -> nn.Module:
    """A seeded TinyMLP, briefly trained (the cases only need its features to be those of a classifier)."""
    torch.manual_seed(0)
    model = TinyMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data().train.x, data().train.targets
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def model() -> nn.Module:
    return copy.deepcopy(_trained())


def features() -> nn.Module:
    from unlearn.models.split import split_model

    return split_model(model())[0]


def splits():
    from unlearn.data.splits import split_by_class

    return split_by_class(data(), [1])


class ListData(Dataset):
    """A dataset whose items are whatever `item(i)` returns (dicts, triples, ...)."""

    def __init__(self, item: Callable[[int], Any], n: int = 20) -> None:
        self.item, self.n = item, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.item(index)


def xy(index: int) -> tuple[torch.Tensor, int]:
    return data().train.x[index * 7], int(data().train.targets[index * 7])


def loader_of(x: Any, y: Any, batch_size: int = 16) -> DataLoader:
    """A DataLoader that yields the given tensors in batches as they are (no collation)."""
    return DataLoader(batches(x, y, batch_size), batch_size=None)


def batches(x: Any, y: Any, batch_size: int = 16) -> list:
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def train_xy() -> tuple[torch.Tensor, torch.Tensor]:
    return data().train.x.clone(), data().train.targets.clone()


@cache
def _edit_dir_template() -> Path:
    """A saved MoRE edit in a temporary directory, made once per process; every file case copies it."""
    from unlearn.methods import MoRE
    from unlearn.methods.saved import save_edit

    root = tempfile.mkdtemp(prefix="unlearn-bad-inputs-")
    atexit.register(shutil.rmtree, root, True)
    edit = MoRE(num_experts=2, seed=0).fit(features(), data().train, [1], NUM_CLASSES)
    return save_edit(edit, Path(root) / "edit", seed=0)


def edit_dir(tmp: Path) -> Path:
    """A fresh copy of a valid saved MoRE edit in `tmp/edit`."""
    return Path(shutil.copytree(_edit_dir_template(), tmp / "edit"))


def write_manifest(tmp: Path, change: Callable[[dict], Any]) -> Path:
    directory = edit_dir(tmp)
    manifest = json.loads((directory / "edit.json").read_text())
    new = change(manifest)
    (directory / "edit.json").write_text(json.dumps(manifest if new is None else new))
    return directory


def load_edit_of(directory: Path):
    from unlearn.methods.saved import load_edit

    return load_edit(directory)


def cli(*argv: str) -> int:
    """Run the CLI in-process; exit status 2 with 'unlearn: error:' is re-raised as the UnlearnError it was."""
    from unlearn.cli import main

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exit_:
            if exit_.code == 2:
                raise UsageError(err.getvalue().strip().splitlines()[-1]) from None
            raise
    if rc == 2 and "unlearn: error:" in err.getvalue():
        raise UnlearnError(err.getvalue().strip())
    return rc


def write_yaml(tmp: Path, values: Any, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return path


# Small valid configs the config cases mutate (fast: nothing here trains).
VISION = {
    "name": "bad",
    "output_dir": "OUT",
    "cache_dir": None,
    "seeds": [0],
    "forget_classes": [4],
    "data": {"name": "digits"},
    "model": {"name": "digits_cnn"},
    "train": {"epochs": 1},
    "methods": [{"name": "MoRE"}],
    "eval": {"kr_lrs": [0.01], "kr_epochs": 1},
}
LLM = {"output_dir": "OUT", "methods": [{"name": "GA", "params": {"steps": 2}}]}
DIFFUSION = {"model_dir": "MODEL", "forget": ["Van Gogh"], "remain": ["Monet"], "output_dir": "OUT"}


def mutated(base: dict, path: str, value: Any, tmp: Path) -> dict:
    """A deep copy of `base` with `path` (dotted; `-key` deletes) set to `value`; OUT/MODEL placed under tmp."""
    values = json.loads(json.dumps(base).replace("OUT", str(tmp / "out")).replace("MODEL", str(tmp / "model")))
    *parents, leaf = path.split(".")
    node = values
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if leaf.startswith("-"):
        del node[leaf[1:]]
    elif isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return values


def vision_config(path: str, value: Any) -> Callable[[Path], Any]:
    from unlearn.config import config_from_dict

    return lambda tmp: config_from_dict(mutated(VISION, path, value, tmp))


def llm_config(path: str, value: Any) -> Callable[[Path], Any]:
    from unlearn.runners.llm import load_llm_config

    return lambda tmp: load_llm_config(write_yaml(tmp, mutated(LLM, path, value, tmp)))


def diffusion_config(path: str, value: Any) -> Callable[[Path], Any]:
    from unlearn.runners.diffusion import load_diffusion_config

    return lambda tmp: load_diffusion_config(write_yaml(tmp, mutated(DIFFUSION, path, value, tmp)))


def existing_file_output(loader: str) -> Callable[[Path], Any]:
    def run(tmp: Path):
        (tmp / "taken").write_text("a file")
        base, build = {"vision": (VISION, vision_config), "llm": (LLM, llm_config), "diffusion": (DIFFUSION, None)}[
            loader
        ]
        if loader == "diffusion":
            return diffusion_config("output_dir", str(tmp / "taken"))(tmp)
        return build("output_dir", str(tmp / "taken"))(tmp)

    return run


# ---------------------------------------------------------------- the corpus

CASES: list[Case] = []


def add(surface: str, what: str, run: Callable[[Path], Any], expect_warning: str | None = None) -> None:
    CASES.append(Case(f"{surface}-{len(CASES):03d}", surface, what, run, expect_warning))


# --- vision config values (config_from_dict), one wrong type or out-of-range value each
VISION_BAD = [
    ("name", 5),
    ("name", None),
    ("output_dir", 3),
    ("cache_dir", 7),
    ("device", "quantum"),
    ("device", 0.5),
    ("seeds", "0"),
    ("seeds", 0),
    ("seeds", []),
    ("seeds", [-1]),
    ("seeds", [1.5]),
    ("seeds", [True]),
    ("seeds", ["a"]),
    ("seeds", None),
    ("task", "samples"),
    ("task", 3),
    ("forget_classes", [4.7]),
    ("forget_classes", [True]),
    ("forget_classes", ["cat"]),
    ("forget_classes", [None]),
    ("forget_classes", "4"),
    ("forget_classes", []),
    ("forget_classes", [-1]),
    ("forget_classes", {"a": 1}),
    ("forget_classes", None),
    ("forget_fraction", 0),
    ("forget_fraction", 1.5),
    ("forget_fraction", "x"),
    ("forget_fraction", float("nan")),
    ("split_seed", -1),
    ("split_seed", "a"),
    ("references", ["Oracle"]),
    ("references", "Original"),
    ("references", [1]),
    ("trian", {}),
    ("seed", 0),
    ("data", "digits"),
    ("data", []),
    ("data.name", 3),
    ("data.name", "nope"),
    ("data.params", []),
    ("data.params", {"nope": 1}),
    ("data.params", {"test_fraction": "x"}),
    ("data.params", {"seed": 1.5}),
    ("data.extra", 1),
    ("data.params", {"test_fraction": 1.5}),
    ("data", {"name": "fashion_mnist", "params": {"train_size": -1}}),
    ("data", {"name": "fashion_mnist", "params": {"train_size": 2.5}}),
    ("data", {"name": "fashion_mnist", "params": {"normalize": "no"}}),
    ("data", {"name": "idx"}),
    ("data", {"name": "idx", "params": {"root": 3}}),
    ("model", []),
    ("model.name", "nope"),
    ("model.name", None),
    ("model.params", {"width": -1}),
    ("model.params", {"nope": 1}),
    ("model.params", {"num_classes": 3}),
    ("model.head", 3),
    ("model.checkpoint", 5),
    ("train", "fast"),
    ("train.epochs", 0),
    ("train.epochs", -1),
    ("train.epochs", 2.5),
    ("train.epochs", "10"),
    ("train.epochs", True),
    ("train.epochs", None),
    ("train.lr", 0),
    ("train.lr", -0.1),
    ("train.lr", "0.1"),
    ("train.lr", float("nan")),
    ("train.lr", float("inf")),
    ("train.lr", True),
    ("train.batch_size", 0),
    ("train.batch_size", 1.5),
    ("train.batch_size", "x"),
    ("train.optimizer", "sgdd"),
    ("train.optimizer", 1),
    ("train.schedule", "cos"),
    ("train.augment", "no"),
    ("train.augment", "yes"),
    ("train.augment", 1),
    ("train.augment", "true"),
    ("train.warmup_epochs", -1),
    ("train.warmup_epochs", 100),
    ("train.weight_decay", -1),
    ("train.weight_decay", "x"),
    ("train.seed", -1),
    ("train.seed", 1.5),
    ("train.epoch", 3),
    ("methods", {"name": "MoRE"}),
    ("methods", "MoRE"),
    ("methods", ["MoRE"]),
    ("methods", [{"name": "Nope"}]),
    ("methods", [{}]),
    ("methods", [{"name": 3}]),
    ("methods", [{"name": "MoRE", "params": []}]),
    ("methods", [{"name": "MoRE", "param": {}}]),
    ("methods", [{"name": "MoRE"}, {"name": "MoRE"}]),
    ("methods", [{"name": "MoRE", "label": 3}]),
    ("methods", [{"name": "MoRE", "params": {"nope": 1}}]),
    ("eval", []),
    ("eval.kr_lrs", [-0.1]),
    ("eval.kr_lrs", [0]),
    ("eval.kr_lrs", "0.1"),
    ("eval.kr_lrs", 0.1),
    ("eval.kr_lrs", [True]),
    ("eval.kr_epochs", -1),
    ("eval.kr_epochs", 0),
    ("eval.kr_epochs", 2.5),
    ("eval.kr_batch_size", 0),
    ("eval.kr_batch_size", -5),
    ("eval.mia", "no"),
    ("eval.plots", 1),
    ("eval.embedding", "umap"),
    ("eval.nope", 1),
    ("audit.knn_ks", [0]),
    ("audit.passes", 0),
    ("audit.relearn_lr", -1),
    ("audit.mlp_hidden", [[0]]),
    ("audit.mlp_hidden", [256]),
    ("audit.few_shot", [-1]),
    ("audit.relearn_epochs", [0]),
    ("audit.logreg_max_iter", 0),
    ("audit.knn_metrics", "cosine"),
    ("audit.relearn_batch_size", 0),
    ("audit.nope", 1),
]
for key, value in VISION_BAD:
    add("config", f"vision config {key} = {value!r}", vision_config(key, value))

# --- method params in a vision config: every method is built before anything trains
METHOD_BAD = [
    ("MoRE", {"num_experts": "8"}),
    ("MoRE", {"num_experts": 2.5}),
    ("MoRE", {"num_experts": True}),
    ("MoRE", {"num_experts": 0}),
    ("MoRE", {"num_experts": None}),
    ("MoRE", {"mode": "remove"}),
    ("MoRE", {"mode": "erase", "num_experts": 8}),
    ("MoRE", {"rtol": 0}),
    ("MoRE", {"rtol": 2}),
    ("MoRE", {"seed": "0"}),
    ("MoRE", {"orthogonal": "no"}),
    ("ESC", {"percent": -5}),
    ("ESC", {"percent": 0}),
    ("ESC", {"percent": 1000}),
    ("ESC", {"percent": "1.5"}),
    ("ESC", {"k": 0}),
    ("ESC", {"k": 2.5}),
    ("ESC", {"explained_variance": 1.5}),
    ("ESC", {"explained_variance": 0}),
    ("Remap", {"target_class": -1}),
    ("Remap", {"target_class": 2.5}),
    ("Remap", {"target_class": "3"}),
    ("Finetune", {"epochs": 0}),
    ("Finetune", {"epochs": 2.5}),
    ("Finetune", {"lr": 0}),
    ("Finetune", {"lr": "x"}),
    ("Finetune", {"batch_size": 0}),
    ("Finetune", {"weight_decay": -1}),
    ("Finetune", {"schedule": "cos"}),
    ("SCRUB", {"temperature": 0}),
    ("SalUn", {"threshold": 1.5}),
    ("Fisher", {"alpha": "x"}),
    ("ESC-T", {"threshold": -1}),
    ("MoRE-T", {"num_hashes": 0}),
    ("l1-sparse", {"alpha": "x"}),
    ("ConditionalMoRE", {"epochs": -1}),
    ("RL", {"use_remain": "yes"}),
    ("LAU", {"reinit": 0}),
    ("BS", {"bound": "x"}),
    ("NG", {"lr": -1e-4}),
]
for name, params in METHOD_BAD:
    add("config", f"method {name} params {params}", vision_config("methods", [{"name": name, "params": params}]))

add("config", "vision output_dir is an existing file", existing_file_output("vision"))

# --- YAML files
YAML_BAD = [
    ("empty file", ""),
    ("only comments", "# nothing here\n"),
    ("null document", "null\n"),
    ("a list at the top", "- a\n- b\n"),
    ("a scalar at the top", "5\n"),
    ("a duplicated top-level key", "name: a\nname: b\n"),
    ("a duplicated nested key", "train:\n  epochs: 1\n  epochs: 2\n"),
    ("a duplicated key in a method", "methods:\n  - name: MoRE\n    name: ESC\n"),
    ("unclosed bracket", "seeds: [0, 1\n"),
    ("tab indentation", "train:\n\tepochs: 1\n"),
    ("a python tag", "name: !!python/object/apply:os.system ['true']\n"),
    ("bad indentation", "train:\n  epochs: 1\n lr: 2\n"),
]


def load_yaml(path: Path):
    from unlearn.config import load_config

    return load_config(path)


for what, text in YAML_BAD:
    add("config", f"YAML config: {what}", lambda tmp, text=text: load_yaml(write_yaml(tmp, text)))


def _non_utf8_yaml(tmp: Path):
    from unlearn.config import load_config

    path = tmp / "config.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    return load_config(path)


add("config", "YAML config that is not UTF-8", _non_utf8_yaml)
add("config", "YAML config path that does not exist", lambda tmp: load_yaml(tmp / "missing.yaml"))
add("config", "YAML config path that is a directory", lambda tmp: load_yaml(tmp))

# --- LLM configs (YAML through load_llm_config)
LLM_BAD = [
    ("methods", []),
    ("methods", {"name": "GA"}),
    ("methods", [{"name": "Nope"}]),
    ("methods", [{"name": "GA", "params": {"lr": -1}}]),
    ("methods", [{"name": "GA", "params": {"steps": 0}}]),
    ("methods", [{"name": "GA", "params": {"steps": "3"}}]),
    ("methods", [{"name": "GA", "params": {"epochs": 2.5}}]),
    ("methods", [{"name": "NPO", "params": {"beta": "x"}}]),
    ("methods", [{"name": "GA", "params": {"bogus": 1}}]),
    ("methods", [{"name": "UOE", "params": {"top_m": 0}}]),
    ("methods", [{"name": "UOE", "params": {"inner": "Nope"}}]),
    ("methods", [{"name": "RMU", "params": {"max_grad_norm": -1}}]),
    ("batch_size", 0),
    ("forget_format", "words"),
    ("data.kind", "nope"),
    ("data.bogus", 1),
    ("lrs", [-1]),
    ("lrs", 0.1),
    ("eval.relearn_steps", -1),
    ("eval.batch_size", 0),
    ("eval.mia", "no"),
    ("train.lr", 0),
    ("train.batch_size", 2.5),
    ("seed", "0"),
    ("device", "tpu9"),
    ("bogus", 1),
]
for key, value in LLM_BAD:
    add("config", f"LLM config {key} = {value!r}", llm_config(key, value))
add("config", "LLM output_dir is an existing file", existing_file_output("llm"))

# --- diffusion configs
DIFFUSION_BAD = [
    ("-model_dir", None),
    ("forget", "Van Gogh"),
    ("remain", 3),
    ("methods", ["nope"]),
    ("methods", "more"),
    ("num_experts", 0),
    ("num_experts", "4"),
    ("steps", 0),
    ("dtype", "float8"),
    ("guidance_scale", -1),
    ("seed", "x"),
    ("height", 0),
    ("batch_size", 0),
    ("prompts_per_artist", 0),
    ("templates", "a photo of {}"),
    ("generate", "yes"),
    ("uce_lambda", -0.1),
    ("device", "gpu"),
    ("bogus", 1),
]
for key, value in DIFFUSION_BAD:
    add("config", f"diffusion config {key} = {value!r}", diffusion_config(key, value))
add("config", "diffusion output_dir is an existing file", existing_file_output("diffusion"))


# --- API: method constructors with a wrong type or range, for every registered method
def _construct(name: str, **params) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.methods import METHODS

        return METHODS[name](**params)

    return run


def _construct_lm(name: str, **params) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.llm import LM_METHODS

        return LM_METHODS[name](**params)

    return run


def _method_names() -> list[str]:
    from unlearn.methods import METHODS

    return list(METHODS)


for method_name in _method_names():
    add("api", f"{method_name}(seed='x')", _construct(method_name, seed="x"))
    add("api", f"{method_name}(progress='yes')", _construct(method_name, progress="yes"))
    add("api", f"{method_name}(bogus=1)", _construct(method_name, bogus=1))
for name, params in METHOD_BAD:
    add("api", f"{name}(**{params})", _construct(name, **params))
for lm_name, params in [
    ("GA", {"lr": -1}),
    ("GA", {"seed": "x"}),
    ("GA", {"bogus": 1}),
    ("NPO", {"beta": "x"}),
    ("NPO", {"steps": 0}),
    ("GradDiff", {"epochs": 0}),
    ("RMU", {"steps": 2.5}),
    ("SRMU", {"lr": 0}),
    ("UOE", {"top_m": 0}),
    ("UOE", {"inner": "Nope"}),
    ("UOE", {"calibration_tokens": -1}),
    ("UOE", {"train_router": "no"}),
]:
    add("api", f"LM {lm_name}(**{params})", _construct_lm(lm_name, **params))


def _build_method(name: str, **params):
    from unlearn.methods import build_method

    return build_method(name, **params)


add("api", "build_method('Nope')", lambda tmp: _build_method("Nope"))
add("api", "build_method('MoRE', nope=1)", lambda tmp: _build_method("MoRE", nope=1))
add("api", "MoRE with one positional argument too many", lambda tmp: _positional_extra())


def _positional_extra():
    from unlearn.methods import MoRE

    return MoRE(8, "remap", True, 1e-6, 0, 256, False, None, False, "extra")


# --- API: fit with bad forget_classes (MoRE and ESC)
BAD_CLASSES = [
    ("[4.7]", [4.7]),
    ("[True]", [True]),
    ("['cat']", ["cat"]),
    ("[None]", [None]),
    ("None", None),
    ("'4'", "4"),
    ("[]", []),
    ("[99]", [99]),
    ("[-1]", [-1]),
    ("all classes", list(range(NUM_CLASSES))),
    ("a dict", {"a": 1}),
    ("4.0", 4.0),
]


def _fit(method: str, forget_classes: Any, num_classes: Any = NUM_CLASSES, data_fn=None) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.methods import METHODS

        source = data().train if data_fn is None else data_fn()
        return METHODS[method]().fit(features(), source, forget_classes, num_classes)

    return run


for method_name in ("MoRE", "ESC"):
    for label, classes in BAD_CLASSES:
        add("api", f"{method_name}.fit(forget_classes={label})", _fit(method_name, classes))
    add("api", f"{method_name}.fit(num_classes='5')", _fit(method_name, [1], "5"))
    add("api", f"{method_name}.fit(num_classes=1)", _fit(method_name, [0], 1))


def _split(classes: Any) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.data.splits import split_by_class

        return split_by_class(data(), classes)

    return run


for label, classes in BAD_CLASSES:
    add("api", f"split_by_class(forget_classes={label})", _split(classes))


# --- data: loaders and datasets of the wrong shape or dtype, through MoRE.fit, ESC.fit and a training baseline
def _bad_data() -> list[tuple[str, Callable[[], Any]]]:
    def as_loader(make_x=None, make_y=None):
        def build():
            x, y = train_xy()
            return loader_of(make_x(x) if make_x else x, make_y(y) if make_y else y)

        return build

    def each_batch(change):
        return lambda: DataLoader([change(b) for b in batches(*train_xy())], batch_size=None)

    return [
        ("a dataset yielding dicts", lambda: ListData(lambda i: {"x": xy(i)[0], "y": xy(i)[1]})),
        ("a dataset yielding (x, y, index) triples", lambda: ListData(lambda i: (*xy(i), i))),
        ("a loader yielding dicts", each_batch(lambda b: {"x": b[0], "y": b[1]})),
        ("a loader yielding triples", each_batch(lambda b: (*b, 0))),
        ("a loader yielding bare tensors", each_batch(lambda b: b[0])),
        ("a plain list of batches", lambda: batches(*train_xy())),
        ("float labels", as_loader(make_y=lambda y: y.float())),
        ("bool labels", as_loader(make_y=lambda y: y > 2)),
        ("one-hot labels", as_loader(make_y=lambda y: nn.functional.one_hot(y, NUM_CLASSES))),
        ("float one-hot labels", as_loader(make_y=lambda y: nn.functional.one_hot(y, NUM_CLASSES).float())),
        ("int64 inputs into a float model", as_loader(make_x=lambda x: (x * 10).long())),
        ("uint8 inputs into a float model", as_loader(make_x=lambda x: (x.abs() * 10).to(torch.uint8))),
        ("labels out of range", as_loader(make_y=lambda y: y + NUM_CLASSES)),
        ("negative labels", as_loader(make_y=lambda y: y - NUM_CLASSES)),
        ("labels as a list of strings", each_batch(lambda b: (b[0], [str(int(v)) for v in b[1]]))),
        ("inputs as nested lists", each_batch(lambda b: (b[0].tolist(), b[1]))),
        ("more labels than inputs", each_batch(lambda b: (b[0][:-1], b[1]))),
        ("an empty loader", lambda: DataLoader([], batch_size=None)),
        ("NaN inputs", as_loader(make_x=lambda x: x * float("nan"))),
        ("inputs of the wrong width", as_loader(make_x=lambda x: x[:, :7])),
    ]


for label, make in _bad_data():
    for method_name in ("MoRE", "ESC"):
        add("data", f"{method_name}.fit on {label}", _fit(method_name, [1], NUM_CLASSES, make))


def _finetune_on(make_dataset: Callable[[], Dataset]) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.data.base import LabeledSubset
        from unlearn.methods import Finetune

        good = splits()
        bad = make_dataset()
        good.D_r = LabeledSubset(bad, torch.arange(len(bad)))
        return Finetune(epochs=1, lr=0.01).unlearn(model(), good)

    return run


class Targeted(ListData):
    """A ListData with a `.targets` attribute, as the split classes need."""

    def __init__(self, item, n: int = 20) -> None:
        super().__init__(item, n)
        self.targets = torch.tensor([xy(i)[1] for i in range(n)])


for label, item in [
    ("dicts", lambda i: {"x": xy(i)[0], "y": xy(i)[1]}),
    ("triples", lambda i: (*xy(i), i)),
    ("float labels", lambda i: (xy(i)[0], float(xy(i)[1]))),
    ("int64 inputs", lambda i: ((xy(i)[0] * 10).long(), xy(i)[1])),
    ("one-hot labels", lambda i: (xy(i)[0], nn.functional.one_hot(torch.tensor(xy(i)[1]), NUM_CLASSES))),
]:
    add("data", f"Finetune.unlearn with a remain set of {label}", _finetune_on(lambda item=item: Targeted(item)))


def _mismatch_tensors(tmp: Path):
    return LabeledTensors(torch.zeros(5, DIM), torch.zeros(4, dtype=torch.long))


add("data", "LabeledTensors with 5 inputs and 4 labels", _mismatch_tensors)


def _outlier(tmp: Path):
    from unlearn.methods import MoRE

    x, y = train_xy()
    x[3] = 1e6
    return MoRE(num_experts=2).fit(features(), LabeledTensors(x, y), [1], NUM_CLASSES)


add("data", "one training input at 1e6 (MoRE.fit)", _outlier, expect_warning="far outside the training range")


# --- API: models, heads, edits
def _head_first(tmp: Path):
    from unlearn.methods import MoRE

    return MoRE(num_experts=2).unlearn(HeadFirst(), splits())


def _split_head(head: Any, make_model=model) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.models.split import split_model

        return split_model(make_model(), head)

    return run


add("api", "a head registered before the body (auto-detected head)", _head_first)
add("api", "split_model(head='nope')", _split_head("nope"))
add("api", "split_model(head='')", _split_head(""))
add("api", "split_model of a model without a Linear", _split_head(None, lambda: nn.Sequential(nn.Flatten())))
add("api", "split_model of a bare Linear", _split_head(None, lambda: nn.Linear(4, 2)))
add("api", "MoRE.apply before fit", lambda tmp: _construct("MoRE")(tmp).apply(model()))


def _apply_to_wrong_width(tmp: Path):
    from unlearn.methods import MoRE

    edit = MoRE(num_experts=2).fit(features(), data().train, [1], NUM_CLASSES)
    other = nn.Sequential(nn.Linear(DIM, 12), nn.ReLU(), nn.Linear(12, NUM_CLASSES))
    return edit.apply(other, head="2")


def _absorb_stochastic(tmp: Path):
    from unlearn.methods import MoRE

    edit = MoRE(num_experts=2).fit(features(), data().train, [1], NUM_CLASSES)
    return edit.apply(model(), absorb=True)


def _more_layer(change: Callable[[dict], None]) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.methods import MoRE
        from unlearn.methods.more import MoRELayer

        layer = MoRE(num_experts=2).fit(features(), data().train, [1], NUM_CLASSES).layer
        parts = {
            "prototypes": layer.prototype_rows.T.clone(),
            "coords": layer.coords.clone(),
            "forget": layer.forget.tolist(),
            "targets": layer.targets.clone(),
            "classes": layer.classes.clone(),
        }
        change(parts)
        new = MoRELayer(parts["prototypes"], parts["coords"], parts["forget"], parts["targets"], 0, parts["classes"])
        from unlearn.methods.base import insert_edit

        return insert_edit(model(), new)(data().test.x)

    return run


def _set(key: str, value: Callable[[dict], Any]) -> Callable[[dict], None]:
    return lambda parts: parts.__setitem__(key, value(parts))


add("api", "MoRE edit applied to a model with other feature width", _apply_to_wrong_width)
add("api", "absorb=True with a stochastic MoRE edit", _absorb_stochastic)
add("api", "MoRELayer with out-of-range remap targets", _more_layer(_set("targets", lambda p: p["targets"] + 50)))
add("api", "MoRELayer with negative targets", _more_layer(_set("targets", lambda p: p["targets"] * 0 - 1)))
add("api", "MoRELayer whose target is a forget column", _more_layer(_set("targets", lambda p: p["targets"] * 0 + 1)))
add("api", "MoRELayer with an out-of-range forget column", _more_layer(_set("forget", lambda p: [40])))
add("api", "MoRELayer with NaN prototypes", _more_layer(_set("prototypes", lambda p: p["prototypes"] * float("nan"))))
add("api", "MoRELayer with coords of the wrong shape", _more_layer(_set("coords", lambda p: p["coords"][:, :5])))
add("api", "MoRELayer with 1-D targets", _more_layer(_set("targets", lambda p: p["targets"][0])))
add("api", "MoRELayer with too few class ids", _more_layer(_set("classes", lambda p: p["classes"][:2])))


def _checkpoint(content: Callable[[Path], None]) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.models.train import load_checkpoint

        path = tmp / "model.pt"
        content(path)
        return load_checkpoint(TinyMLP(), path)

    return run


add("file", "load_checkpoint of a missing file", _checkpoint(lambda p: None))
add("file", "load_checkpoint of a text file", _checkpoint(lambda p: p.write_text("not a checkpoint")))
add(
    "file",
    "load_checkpoint of another model's weights",
    _checkpoint(lambda p: torch.save(nn.Linear(3, 3).state_dict(), p)),
)
add(
    "file",
    "load_checkpoint of a pickled object",
    _checkpoint(lambda p: torch.save({"fc.weight": object()}, p)),
)
add(
    "file",
    "load_checkpoint of a truncated file",
    _checkpoint(lambda p: (torch.save(TinyMLP().state_dict(), p), p.write_bytes(p.read_bytes()[:200]))),
)

# --- files: edit manifests and tensors (load_edit)
MANIFEST_BAD = [
    ("a JSON list", lambda m: [m]),
    ("a JSON string", lambda m: "edit"),
    ("seed 'abc'", lambda m: m.__setitem__("seed", "abc")),
    ("seed -1", lambda m: m.__setitem__("seed", -1)),
    ("format 2", lambda m: m.__setitem__("format", 2)),
    ("no format", lambda m: m.pop("format")),
    ("layer 'Foo'", lambda m: m.__setitem__("layer", "Foo")),
    ("layer 3", lambda m: m.__setitem__("layer", 3)),
    ("forget_classes '4'", lambda m: m.__setitem__("forget_classes", "4")),
    ("forget_classes [1.5]", lambda m: m.__setitem__("forget_classes", [1.5])),
    ("forget_classes changed to [2]", lambda m: m.__setitem__("forget_classes", [2])),
    ("feature_dim -1", lambda m: m.__setitem__("feature_dim", -1)),
    ("feature_dim changed", lambda m: m.__setitem__("feature_dim", 99)),
    ("num_experts '8'", lambda m: m.__setitem__("num_experts", "8")),
    ("num_experts changed", lambda m: m.__setitem__("num_experts", 7)),
    ("prototype_sha256 'xyz'", lambda m: m.__setitem__("prototype_sha256", "xyz")),
    ("prototype_sha256 of other prototypes", lambda m: m.__setitem__("prototype_sha256", "0" * 64)),
    ("parts not a list", lambda m: m.update(layer="Sequential", parts="x")),
]
for what, change in MANIFEST_BAD:
    add("file", f"edit.json: {what}", lambda tmp, change=change: load_edit_of(write_manifest(tmp, change)))


def _edit_file(action: Callable[[Path], None]) -> Callable[[Path], Any]:
    def run(tmp: Path):
        directory = edit_dir(tmp)
        action(directory)
        return load_edit_of(directory)

    return run


def _retensor(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def action(directory: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(directory / "edit.safetensors")
        change(tensors)
        save_file(tensors, directory / "edit.safetensors")

    return action


add("file", "edit.json not UTF-8", _edit_file(lambda d: (d / "edit.json").write_bytes(b'{"format": 1, "x": "\xe9"}')))
add("file", "edit.json not JSON", _edit_file(lambda d: (d / "edit.json").write_text("{format: 1")))
add("file", "edit.json empty", _edit_file(lambda d: (d / "edit.json").write_text("")))
add("file", "edit.json missing", _edit_file(lambda d: (d / "edit.json").unlink()))
add("file", "edit.safetensors missing", _edit_file(lambda d: (d / "edit.safetensors").unlink()))
add(
    "file",
    "edit.safetensors truncated",
    _edit_file(lambda d: (d / "edit.safetensors").write_bytes((d / "edit.safetensors").read_bytes()[:100])),
)
add("file", "edit.safetensors is text", _edit_file(lambda d: (d / "edit.safetensors").write_text("tensors")))
add("file", "edit tensors: coords missing", _edit_file(_retensor(lambda t: t.pop("coords"))))
add(
    "file",
    "edit tensors: targets out of range",
    _edit_file(_retensor(lambda t: t.__setitem__("targets", t["targets"] + 50))),
)
add(
    "file",
    "edit tensors: NaN prototypes",
    _edit_file(_retensor(lambda t: t.__setitem__("prototype_rows", t["prototype_rows"] * float("nan")))),
)
add(
    "file",
    "edit tensors: forget column out of range",
    _edit_file(_retensor(lambda t: t.__setitem__("forget", t["forget"] + 40))),
)
add(
    "file",
    "edit tensors: prototypes changed (hash mismatch)",
    _edit_file(_retensor(lambda t: t.__setitem__("prototype_rows", t["prototype_rows"] * 2))),
)
add("file", "edit directory is a file", lambda tmp: load_edit_of((tmp / "f").write_text("x") and tmp / "f"))
add("file", "edit directory does not exist", lambda tmp: load_edit_of(tmp / "missing"))


# --- files: metrics.json through `unlearn report`
def _report(content: Any, raw: bytes | None = None) -> Callable[[Path], Any]:
    def run(tmp: Path):
        run_dir = tmp / "run"
        run_dir.mkdir()
        path = run_dir / "metrics.json"
        path.write_bytes(raw if raw is not None else json.dumps(content).encode())
        return cli("report", run_dir)

    return run


RUN_IDENTITY = {"name": "x", "dataset": "d", "model": "m", "num_classes": 3, "task": "class", "seeds": [0]}
METRICS_BAD = [
    ("{}", {}),
    ("[]", []),
    ('"x"', "x"),
    ("no methods", {"name": "x"}),
    ("methods {}", {"methods": {}}),
    ("methods a list", {"methods": []}),
    ("a method without runs", {"methods": {"A": {}}}),
    ("runs a string", {"methods": {"A": {"runs": "x"}}}),
    ("runs empty", {"methods": {"A": {"runs": []}}}),
    ("a run that is a number", {"methods": {"A": {"runs": [3]}}}),
    ("summary a list", {"methods": {"A": {"runs": [{"seed": 0}], "summary": []}}}),
    ("num_classes a string", {"num_classes": "ten", "methods": {"A": {"runs": [{"seed": 0}]}}}),
    ("only methods, no run identity", {"methods": {"A": {"runs": [{"seed": 0}]}}}),
    ("a non-numeric accuracy", {**RUN_IDENTITY, "methods": {"A": {"runs": [{"seed": 0, "acc": {"D_f": "high"}}]}}}),
    ("a summary entry that is a number", {**RUN_IDENTITY, "methods": {"A": {"runs": [{}], "summary": {"D_f": 3}}}}),
    ("HM a string", {**RUN_IDENTITY, "methods": {"A": {"runs": [{"seed": 0, "HM": "good"}]}}}),
]
for what, content in METRICS_BAD:
    add("cli", f"unlearn report: metrics.json {what}", _report(content))
add("cli", "unlearn report: metrics.json truncated", _report(None, b'{"methods": {"A": '))
add("cli", "unlearn report: metrics.json not UTF-8", _report(None, b'{"name": "\xe9"}'))
add("cli", "unlearn report: run dir without metrics.json", lambda tmp: cli("report", tmp))
add("cli", "unlearn report: run dir that does not exist", lambda tmp: cli("report", tmp / "missing"))


# --- CLI: every subcommand with a bad config or argument (all fail before anything trains)
def _cli_with_config(values: Any, *argv: str, base: dict = VISION) -> Callable[[Path], Any]:
    def run(tmp: Path):
        config = values if isinstance(values, str) else mutated(base, *(values or ("name", "x")), tmp)
        path = write_yaml(tmp, config)
        return cli(*[path if a == "CONFIG" else str(tmp / a[4:]) if a.startswith("TMP/") else a for a in argv])

    return run


CLI_BAD = [
    (("train.epochs", 0), ("run", "CONFIG")),
    (("methods", [{"name": "Nope"}]), ("run", "CONFIG")),
    (("methods", [{"name": "MoRE", "params": {"num_experts": "8"}}]), ("compare", "CONFIG")),
    (("eval.kr_lrs", [-0.1]), ("run", "CONFIG")),
    (("forget_classes", ["cat"]), ("run", "CONFIG")),
    ("", ("run", "CONFIG")),
    ("name: a\nname: b\n", ("run", "CONFIG")),
    (None, ("run", "TMP/missing.yaml")),
    (None, ("run", "CONFIG", "--seeds", "abc")),
    (None, ("run", "CONFIG", "--forget-classes", "cat")),
    (None, ("run", "CONFIG", "--forget-classes", "99")),
    (None, ("run", "CONFIG", "--device", "quantum")),
    (None, ("run", "CONFIG", "--seeds", "-1")),
    (None, ("run", "CONFIG", "--output-dir", "CONFIG")),
    (None, ("bogus-command",)),
    (None, ("run",)),
    (("methods", [{"name": "Nope"}]), ("audit", "CONFIG")),
    (None, ("audit", "CONFIG", "--seeds", "x")),
    (None, ("fit", "CONFIG", "--output", "TMP/edit", "--method", "Nope")),
    ((("methods", [{"name": "Finetune"}])), ("fit", "CONFIG", "--output", "TMP/edit")),
    (None, ("fit", "CONFIG", "--output", "TMP/edit", "--checkpoint", "TMP/missing.pt")),
    (None, ("apply", "CONFIG", "--checkpoint", "TMP/missing.pt", "--edit", "TMP/e", "--output", "TMP/o")),
    (("model.name", "nope"), ("apply", "CONFIG", "--checkpoint", "TMP/m.pt", "--edit", "TMP/e", "--output", "TMP/o")),
    (None, ("apply", "CONFIG", "--edit", "TMP/e", "--output", "TMP/o")),
    (("methods", [{"name": "Nope"}]), ("llm", "CONFIG")),
    (None, ("llm", "CONFIG", "--seed", "x")),
    (("forget", "Van Gogh"), ("diffusion", "CONFIG")),
]
for values, argv in CLI_BAD:
    base = LLM if argv[0] == "llm" else DIFFUSION if argv[0] == "diffusion" else VISION
    if argv[0] == "llm" and values is None:
        values = ("seed", 0)
    add("cli", f"unlearn {' '.join(argv)} with {values!r}", _cli_with_config(values, *argv, base=base))


def _apply_with_bad_edit(change: Callable[[dict], Any]) -> Callable[[Path], Any]:
    def run(tmp: Path):
        from unlearn.models import build_model

        config = write_yaml(tmp, mutated(VISION, "name", "x", tmp))
        checkpoint = tmp / "m.pt"
        torch.save(build_model("digits_cnn", 10, (1, 8, 8)).state_dict(), checkpoint)
        edit = write_manifest(tmp, change)
        return cli("apply", config, "--checkpoint", checkpoint, "--edit", edit, "--output", tmp / "o")

    return run


add("cli", "unlearn apply with an edit for 24-d features on a digits CNN", _apply_with_bad_edit(lambda m: None))
add("cli", "unlearn apply with edit.json a list", _apply_with_bad_edit(lambda m: [m]))
add("cli", "unlearn apply with edit.json seed 'abc'", _apply_with_bad_edit(lambda m: m.__setitem__("seed", "abc")))
