"""Files written so that a crash leaves the old content or the new, never a mix; torch files
read with clear errors."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _umask() -> int:
    """The process's file-creation mask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The permissions the new file gets: an existing file's, else ``0o666`` less the umask
    (what ``open(path, "wb")`` would give; ``mkstemp`` alone makes files private)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsynced, then
    ``os.replace``d over ``path`` (the folder is created if needed). The file keeps the
    permissions of the one it replaces; a new one gets the umask's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def read_torch(path: str | os.PathLike[str], what: str) -> object:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True``; a missing or
    unreadable file is an error starting with ``what`` (``model``, ``checkpoint``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and torch errors alike
        raise ValueError(f"{what}: cannot read {str(path)!r}: {error}") from error


def read_versioned(path: Path, what: str, fmt: str, version: int, made_by: str) -> Mapping:
    """The torch file at ``path`` (see :func:`read_torch`), refused unless it is a mapping
    whose ``format`` is ``fmt`` (a file ``made_by`` something) and ``version`` is ``version``."""
    payload = read_torch(path, what)
    if not isinstance(payload, Mapping) or payload.get("format") != fmt:
        raise ValueError(
            f"{what}: {str(path)!r} is not a pyinstance {what} file (made by {made_by})"
        )
    if payload.get("version") != version:
        raise ValueError(
            f"{what}: {str(path)!r} has layout version {payload.get('version')!r}; this "
            f"pyinstance reads version {version}"
        )
    return payload
