"""Atomic writes (``wsigraph.io``): the umask is honoured and a full disk is named as such."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections import namedtuple
from pathlib import Path

import pytest

from wsigraph import io
from wsigraph.io import atomic_path, write_text

usage = namedtuple("usage", "total used free")


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_files_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as fh:  # what the user expects
        fh.write("x")
    write_text(tmp_path / "atomic.txt", "x")
    with atomic_path(tmp_path / "sub" / "table.csv") as tmp:
        assert mode(tmp) == expected  # already while being written, not only once renamed
        tmp.write_text("a,b\n")
    assert mode(tmp_path / "plain.txt") == expected
    assert mode(tmp_path / "atomic.txt") == expected
    assert mode(tmp_path / "sub" / "table.csv") == expected
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "atomic.txt",
        "plain.txt",
        "sub",
        "table.csv",
    ]  # no temporary file left


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = write_text(tmp_path / "x.txt", "old")
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise KeyError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def _assert_no_space(err: pytest.ExceptionInfo, target: Path) -> None:
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    msg = str(err.value)
    assert "no space left on device" in msg and str(target) in msg and "\n" not in msg, msg
    assert "unexpected pos" not in msg
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == [
        target.name
    ]


def test_disk_full_oserror_names_the_path(tmp_path):
    target = write_text(tmp_path / "feats.pt", "old")
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    _assert_no_space(err, target)


def test_torch_unexpected_pos_on_a_full_disk_says_no_space(tmp_path, monkeypatch):
    """torch.save to a path reports a failed write as 'unexpected pos N vs M', without errno;
    with the disk full that is reported as no space left on device, naming the file."""
    target = write_text(tmp_path / "feats.pt", "old")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 512, 512))
    with pytest.raises(OSError) as err, atomic_path(target):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 1792 vs 1686"
        )
    _assert_no_space(err, target)


def test_torch_unexpected_pos_with_free_space_is_left_alone(tmp_path, monkeypatch):
    target = write_text(tmp_path / "feats.pt", "old")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(target):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 1792 vs 1686"
        )
    assert target.read_text() == "old"


def test_keyboard_interrupt_is_never_turned_into_a_disk_error(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise KeyboardInterrupt from None
    assert not target.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_real_torch_save_on_a_full_device(tmp_path, monkeypatch):
    """The real torch.save message: the temporary file is a link to /dev/full (every write
    fails with ENOSPC) and the disk reports no free space."""
    torch = pytest.importorskip("torch")

    def full_tmp(path: Path) -> Path:
        tmp = path.with_name(f".{path.name}.full.tmp")
        tmp.symlink_to("/dev/full")
        return tmp

    target = write_text(tmp_path / "feats.pt", "old")
    monkeypatch.setattr(io, "_new_tmp", full_tmp)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(OSError) as err, atomic_path(target) as tmp:
        torch.save({"features": torch.zeros(1000)}, tmp)
    assert "unexpected pos" in str(err.value.__cause__)  # what the user saw before
    _assert_no_space(err, target)
