"""The docs run: every ```python and ```bash block of README.md and docs/*.md is executed on tiny data.

A block preceded by an `<!-- no-run: reason -->` line is skipped (long runs, installs, many processes).
The blocks of one page run in order in one temporary directory, so a later block can use what an earlier
one wrote; Python blocks of a page share one namespace. `configs/` and `.venv` are linked into that
directory, so the pages' commands (`unlearn ...`, `.venv/bin/unlearn ...`) work as written.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
NO_RUN = "<!-- no-run"


def code_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language, code, runs) of every fenced block; `runs` is False after a no-run comment."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        runs = not (before and before[-1].strip().startswith(NO_RUN))
        blocks.append((match.group(1), match.group(2), runs))
    return blocks


def _workdir(tmp_path: Path) -> dict[str, str]:
    """Link the repository's configs and the interpreter's venv into `tmp_path`; the environment to run in."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def test_code_blocks_are_found_and_no_run_is_marked():
    text = "<!-- no-run: long -->\n```bash\nsleep 1000\n```\n\n```python\nx = 1\n```\n\n```yaml\na: 1\n```\n"
    assert code_blocks(text) == [("bash", "sleep 1000\n", False), ("python", "x = 1\n", True), ("yaml", "a: 1\n", True)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocks = [(lang, code) for lang, code, runs in code_blocks(page.read_text()) if runs]
    blocks = [(lang, code) for lang, code in blocks if lang in ("python", "bash")]
    if not blocks:
        pytest.skip(f"{page.name} has no block to run")
    env = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "src"))
    namespace: dict = {"__name__": "__docs__"}
    for number, (lang, code) in enumerate(blocks, start=1):
        where = f"{page.relative_to(ROOT)} block {number} ({lang})"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def test_results_pages_match_bench_results():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "bench" / "render_docs.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    stale = [
        str(p.relative_to(ROOT)) for p, text in render.outputs().items() if not p.is_file() or p.read_text() != text
    ]
    assert not stale, f"run .venv/bin/python bench/render_docs.py: {stale} differ from bench/results"


def test_config_reference_names_every_key():
    from unlearn.config import ExperimentConfig, _dataclass_of, _field_types
    from unlearn.data import DATASETS
    from unlearn.methods import METHODS
    from unlearn.models import DERIVED, MODELS

    page = (ROOT / "docs" / "getting-started.md").read_text()
    keys = {f.name for f in dataclasses.fields(ExperimentConfig)}
    nested = {_dataclass_of(annotation)[0] for annotation in _field_types(ExperimentConfig).values()} - {None}
    keys |= {f.name for cls in nested for f in dataclasses.fields(cls)}
    for name, (loader, fixed) in DATASETS.items():
        keys |= {name} | (set(inspect.signature(loader).parameters) - set(fixed))
    for name, cls in MODELS.items():
        keys |= {name} | (set(inspect.signature(cls).parameters) - set(DERIVED))
    for name, cls in METHODS.items():
        keys |= {name} | set(inspect.signature(cls).parameters)
    missing = sorted(key for key in keys if f"`{key}`" not in page)
    assert not missing, f"docs/getting-started.md does not document {missing}"
