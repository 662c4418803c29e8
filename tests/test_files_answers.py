"""_files: what write_atomic syncs and names, the umask read without /proc, and the torch
file readers' answers and messages (written for mutation testing)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
import torch

from pyinstance import _files
from pyinstance._files import read_torch, read_versioned, write_atomic


def _torch_bytes(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_the_umask_is_read_from_proc_without_changing_it():
    previous = os.umask(0o027)
    try:
        assert _files._umask() == 0o027
        assert os.umask(0o027) == 0o027  # unchanged
    finally:
        os.umask(previous)


def test_the_umask_without_proc_is_read_and_restored(monkeypatch):
    real_read_text = Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            raise OSError("no /proc here")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_proc)
    previous = os.umask(0o037)
    try:
        assert _files._umask() == 0o037
        assert os.umask(0o037) == 0o037  # restored after reading
    finally:
        os.umask(previous)


def test_a_status_file_without_a_umask_line_falls_back(monkeypatch):
    real_read_text = Path.read_text

    def old_kernel(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            return "Name:\tpython\nPid:\t1\n"
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", old_kernel)
    previous = os.umask(0o007)
    try:
        assert _files._umask() == 0o007
    finally:
        os.umask(previous)


def test_a_new_file_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert _files._mode_for(tmp_path / "new") == 0o640
    finally:
        os.umask(previous)
    kept = tmp_path / "kept"
    kept.write_bytes(b"")
    kept.chmod(0o604)
    assert _files._mode_for(kept) == 0o604


def test_write_atomic_syncs_the_data_then_the_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(handle):
        synced.append("folder" if stat.S_ISDIR(os.fstat(handle).st_mode) else "file")
        real_fsync(handle)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "sub" / "data.bin"
    write_atomic(str(target), b"payload")
    assert synced == ["file", "folder"]
    assert target.read_bytes() == b"payload"


def test_the_temporary_file_is_hidden_beside_the_target_with_the_mode(tmp_path, monkeypatch):
    seen: list[tuple[Path, str, int]] = []
    real_replace = os.replace

    def replace(source, destination):
        source = Path(source)
        seen.append((source.parent, source.name, stat.S_IMODE(source.stat().st_mode)))
        assert source.read_bytes() == b"abc"  # written and flushed before the rename
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    target.chmod(0o600)
    write_atomic(target, b"abc")
    ((folder, name, mode),) = seen
    assert folder == tmp_path
    assert name.startswith(".model.pt.") and name.endswith(".tmp")
    assert mode == 0o600
    assert target.read_bytes() == b"abc"


def test_a_failed_rename_removes_the_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def replace(source, destination):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
    assert target.read_bytes() == b"old"


def test_a_folder_that_cannot_be_opened_is_not_an_error(tmp_path, monkeypatch):
    real_open = os.open

    def no_folders(path, flags, *args):
        if Path(path).is_dir():
            raise PermissionError("no")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    write_atomic(tmp_path / "f.bin", b"x")
    assert (tmp_path / "f.bin").read_bytes() == b"x"


def test_a_folder_handle_is_closed_after_syncing(tmp_path, monkeypatch):
    closed: list[int] = []
    opened: list[int] = []
    real_open, real_close = os.open, os.close

    def record_open(path, flags, *args):
        handle = real_open(path, flags, *args)
        if Path(path) == tmp_path:
            opened.append(handle)
        return handle

    def record_close(handle):
        closed.append(handle)
        real_close(handle)

    monkeypatch.setattr(os, "open", record_open)
    monkeypatch.setattr(os, "close", record_close)
    _files._sync_folder(tmp_path)
    assert len(opened) == 1 and opened[0] in closed


def test_read_torch_loads_on_the_cpu(tmp_path):
    path = tmp_path / "t.pt"
    path.write_bytes(_torch_bytes({"w": torch.arange(3.0)}))
    loaded = read_torch(str(path), "model")
    assert torch.equal(loaded["w"], torch.arange(3.0)) and loaded["w"].device.type == "cpu"


def test_read_torch_errors_name_what_and_the_path(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError) as raised:
        read_torch(missing, "checkpoint")
    assert str(raised.value) == f"checkpoint: no such file {str(missing)!r}"
    with pytest.raises(FileNotFoundError):  # a folder is not a file
        read_torch(tmp_path, "checkpoint")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError) as raised:
        read_torch(broken, "model")
    assert str(raised.value).startswith(f"model: cannot read {str(broken)!r}: ")
    assert isinstance(raised.value.__cause__, Exception)


def test_read_torch_refuses_pickled_objects(tmp_path):
    path = tmp_path / "pickled.pt"
    path.write_bytes(_torch_bytes({"object": Path("x")}))  # weights_only refuses classes
    with pytest.raises(ValueError, match=r"^model: cannot read "):
        read_torch(path, "model")


def _versioned(tmp_path, payload) -> Path:
    path = tmp_path / "v.pt"
    path.write_bytes(_torch_bytes(payload))
    return path


def test_read_versioned_returns_a_matching_file(tmp_path):
    payload = {"format": "pyinstance-x", "version": 2, "data": [1, 2]}
    assert read_versioned(_versioned(tmp_path, payload), "x", "pyinstance-x", 2, "me") == payload


@pytest.mark.parametrize(
    "payload", [[1, 2], {"format": "other", "version": 2}, {"version": 2}, "pyinstance-x"]
)
def test_read_versioned_refuses_foreign_files(tmp_path, payload):
    path = _versioned(tmp_path, payload)
    with pytest.raises(ValueError) as raised:
        read_versioned(path, "verifier", "pyinstance-x", 2, "`pyinstance train`")
    assert str(raised.value) == (
        f"verifier: {str(path)!r} is not a pyinstance verifier file (made by `pyinstance train`)"
    )


@pytest.mark.parametrize("version", [1, 3, None, "2"])
def test_read_versioned_refuses_other_versions(tmp_path, version):
    payload = {"format": "pyinstance-x"} | ({} if version is None else {"version": version})
    path = _versioned(tmp_path, payload)
    with pytest.raises(ValueError) as raised:
        read_versioned(path, "model", "pyinstance-x", 2, "me")
    assert str(raised.value) == (
        f"model: {str(path)!r} has layout version {version!r}; this pyinstance reads version 2"
    )


def test_read_versioned_names_what_for_a_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "gone.pt"
    with pytest.raises(FileNotFoundError) as raised:
        read_versioned(missing, "verifier", "pyinstance-x", 1, "me")
    assert str(raised.value) == f"verifier: no such file {str(missing)!r}"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"^verifier: cannot read "):
        read_versioned(junk, "verifier", "pyinstance-x", 1, "me")


def test_the_umask_is_read_without_setting_it(monkeypatch):
    calls: list[int] = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    expected = real_umask(0o022)
    real_umask(expected)
    assert _files._umask() == expected
    assert calls == []  # read from /proc/self/status, never changed, even for a moment


def test_an_unreadable_umask_line_falls_back(monkeypatch):
    real_read_text = Path.read_text

    def garbled(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            return "Name:\tpython\nUmask:\tnot-octal\n"
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", garbled)
    previous = os.umask(0o027)
    try:
        assert _files._umask() == 0o027
    finally:
        os.umask(previous)


def test_a_temporary_already_gone_does_not_hide_the_error(tmp_path, monkeypatch):
    def replace(source, destination):
        os.unlink(source)  # removed by someone else, then the rename fails
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="^rename failed$"):
        write_atomic(tmp_path / "f.bin", b"x")
    assert list(tmp_path.iterdir()) == []
