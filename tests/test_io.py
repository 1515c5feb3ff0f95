"""Atomic writes: the destination is the old file or the whole new one, and no temp file is left behind."""

from __future__ import annotations

import json

import pytest

from unlearn.errors import UnlearnError
from unlearn.io import atomic_path, atomic_write_json, atomic_write_text


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_temp_names_are_unique(tmp_path):
    with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "x").read_text() in {"1", "2"}


def test_directory_or_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(UnlearnError, match="is a directory"):
        atomic_write_text(tmp_path / "dir", "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(UnlearnError, match="not a directory"):
        atomic_write_text(tmp_path / "file" / "out.json", "x")
