"""Atomic file writes: every file the project writes goes through here.

A write goes to a temp file with a unique name in the destination's directory, is flushed and fsynced,
then renamed over the destination (`os.replace`, atomic on POSIX). A reader therefore sees the old file or
the whole new one, never a truncated one, and concurrent writers never share a temp file.

Directories written by other libraries (`save_pretrained`) go through `atomic_dir`: written whole into a
unique temp directory, then swapped in, so the destination is never a half-written directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a unique temp directory next to `path`; on success swap it in for `path`, else delete it.

    The swap is two renames (the old directory out, the new one in): a crash between them leaves no
    directory at `path`, never a half-written one.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UnlearnError(f"cannot write the directory {path}: a file of that name exists.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise UnlearnError(f"cannot write {path}: {path.parent} exists and is not a directory.") from error
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
