"""Atomic file writes: every file the project writes goes through here.

A write goes to a temp file with a unique name in the destination's directory, is flushed and fsynced,
then renamed over the destination (`os.replace`, atomic on POSIX). A reader therefore sees the old file or
the whole new one, never a truncated one, and concurrent writers never share a temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unlearn.errors import UnlearnError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a unique temp path next to `path`; on success fsync it and rename it to `path`, else delete it.

    For writers that need a file name (torch.save, safetensors, matplotlib): write to the yielded path.
    """
    path = Path(path)
    if path.is_dir():
        raise UnlearnError(f"cannot write {path}: it is a directory.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise UnlearnError(f"cannot write {path}: {path.parent} exists and is not a directory.") from error
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns `path`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 2, default: Callable | None = str) -> Path:
    """Write `value` as JSON (non-JSON values through `default`, `str` by default) atomically; returns `path`."""
    text = json.dumps(value, indent=indent, default=default)
    return atomic_write_text(path, text + "\n")
