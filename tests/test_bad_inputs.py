"""A representative slice of the bad-input corpus (bench/bad_input_cases.py): each must be one clear UnlearnError.

The whole corpus (500+ cases) runs with `python bench/bad_inputs.py`; this replays every 25th case plus the
cases that once were silent or raw tracebacks (labels, loaders, heads, manifests, report files).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from bad_input_cases import CASES  # noqa: E402
from bad_inputs import replay  # noqa: E402

ISSUE_CASES = (
    "forget_classes=[4.7]",
    "forget_classes=[True]",
    "a dataset yielding dicts",
    "float labels",
    "one-hot labels",
    "int64 inputs into a float model",
    "a head registered before the body",
    "edit.json: a JSON list",
    "edit.json not UTF-8",
    "edit.json: seed 'abc'",
    "metrics.json {}",
    "metrics.json truncated",
    "train.augment = 'no'",
    "eval.kr_epochs = -1",
    "ESC(**{'percent': -5})",
    "ESC(**{'percent': 1000})",
    "MoRE(**{'num_experts': '8'})",
    "YAML config: a duplicated top-level key",
    "YAML config: empty file",
    "MoRELayer with out-of-range remap targets",
    "vision output_dir is an existing file",
    "one training input at 1e6",
)
SLICE = [case for index, case in enumerate(CASES) if index % 25 == 0 or any(s in case.what for s in ISSUE_CASES)]


@pytest.mark.parametrize("case", SLICE, ids=[case.id for case in SLICE])
def test_bad_input_is_a_clear_error(case):
    result = replay(case, timeout=30)
    expected = "warning" if case.expect_warning else ("UnlearnError", "usage error")
    assert result["outcome"] in expected, f"{case.what}: {result['outcome']}: {result['message']}"
