"""avatar3d.io.atomic: temp siblings, commit on success only, cleanup on any exception."""

from __future__ import annotations

import re

import pytest

from avatar3d.io.atomic import atomic_dir, atomic_file
from avatar3d.io.outputs import MARKER, OutputError


def _names(d) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_atomic_dir_commits_on_success(tmp_path):
    target = tmp_path / "capture"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and not target.exists()
        assert re.fullmatch(r"\.capture\.tmp-[0-9]+-[0-9a-f]{4}-[0-9a-f]{8}", tmp.name)
        (tmp / "images").mkdir()
        (tmp / "images" / "0.txt").write_text("x")
    assert (target / "images" / "0.txt").read_text() == "x"
    assert _names(tmp_path) == ["capture"]


def test_atomic_dir_replaces_existing_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    assert _names(target) == [MARKER, "old.txt"]
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise ValueError("stage failed")
    assert _names(target) == [MARKER, "old.txt"] and _names(tmp_path) == ["out"]

    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(target) == [MARKER, "new.txt"] and _names(tmp_path) == ["out"]


def test_atomic_dir_never_replaces_a_directory_it_did_not_write(tmp_path):
    """A user's directory (no marker) is never replaced, even by the library's own API; an empty
    directory may be filled."""
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="did not write"), atomic_dir(users) as tmp:
        (tmp / "x").write_text("x")
    assert _names(users) == ["thesis.tex"] and _names(tmp_path) == ["users"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(OutputError, match="not a directory"), atomic_dir(a_file):
        pass
    assert a_file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:
        (tmp / "x").write_text("x")
    assert _names(empty) == [MARKER, "x"]


def test_atomic_dir_cleans_up_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "a" / "b") as tmp:
        (tmp / "f").write_bytes(b"1")
        raise KeyboardInterrupt
    assert _names(tmp_path / "a") == []


def test_atomic_file_commits_with_suffix_and_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "video.mp4"
    with atomic_file(target) as tmp:
        assert (
            re.fullmatch(r"\.video\.mp4\.tmp-[0-9]+-[0-9a-f]{4}-[0-9a-f]{8}\.mp4", tmp.name)
            and not tmp.exists()
        )
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and _names(target.parent) == ["video.mp4"]
    with atomic_file(tmp_path / "x.json", suffix="") as tmp:
        assert tmp.name.startswith(".x.json.tmp-") and tmp.suffix != ".json"
        tmp.write_text("{}")
    assert (tmp_path / "x.json").read_text() == "{}"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_file_failure_keeps_existing_and_removes_temp(tmp_path, exc):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(exc), atomic_file(target) as tmp:
        tmp.write_bytes(b"half-written")
        raise exc()
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["model.safetensors"]


def test_atomic_file_requires_the_body_to_write(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "nothing.bin"):
        pass
    assert _names(tmp_path) == []
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError), atomic_file(tmp_path / "d"):
        pass


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_writers_are_removed_live_and_foreign_kept(tmp_path):
    import os
    import time

    from avatar3d.io import atomic

    host = atomic._HOST
    dead, me = _dead_pid(), os.getpid()
    stale_dir = tmp_path / f".cap.tmp-{dead}-{host}-0123abcd"
    (stale_dir / "images").mkdir(parents=True)
    stale_file = tmp_path / f".out.mp4.tmp-{dead}-{host}-89abcdef.mp4"
    stale_file.write_bytes(b"half")
    live = tmp_path / f".cap.tmp-{me}-{host}-00000000"  # this process: alive, kept
    live.mkdir()
    legacy_new = tmp_path / ".out.mp4.tmp-deadbeef.mp4"  # no pid, recent: kept
    legacy_new.write_bytes(b"x")
    legacy_old = tmp_path / ".cap.tmp-cafebabe"  # no pid, untouched for long: removed
    legacy_old.mkdir()
    old = time.time() - atomic.STALE_AGE_S - 10
    os.utime(legacy_old, (old, old))
    users = [tmp_path / ".cap.tmp-notours", tmp_path / "cap.tmp-12-abcd-0123abcd", tmp_path / ".hidden"]
    for u in users:
        u.write_text("user data")
    with pytest.warns(RuntimeWarning, match="removed 3 temporary"), atomic_file(tmp_path / "x.json") as tmp:
        tmp.write_text("{}")
    left = set(_names(tmp_path))
    assert not {stale_dir.name, stale_file.name, legacy_old.name} & left
    assert {live.name, legacy_new.name, "x.json"} | {u.name for u in users} <= left


def test_stale_old_sibling_is_put_back_when_its_target_is_missing(tmp_path):
    from avatar3d.io import atomic

    # a writer killed between moving the old output aside and moving the new one in
    old = tmp_path / f".avatar.old-{_dead_pid()}-{atomic._HOST}-0123abcd"
    old.mkdir()
    (old / "weights.safetensors").write_text("previous")
    assert atomic.remove_stale_temps(tmp_path, force=True) == []
    assert (tmp_path / "avatar" / "weights.safetensors").read_text() == "previous"


def test_a_directory_is_rescanned_only_after_a_while(tmp_path, monkeypatch):
    from avatar3d.io import atomic

    assert atomic.remove_stale_temps(tmp_path) == []
    stale = tmp_path / f".a.tmp-{_dead_pid()}-{atomic._HOST}-0123abcd"
    stale.write_text("x")
    assert atomic.remove_stale_temps(tmp_path) == [] and stale.exists()  # scanned just now
    monkeypatch.setattr(atomic, "RESCAN_S", 0.0)
    with pytest.warns(RuntimeWarning):
        assert atomic.remove_stale_temps(tmp_path) == [stale]


def test_atomic_dir_can_continue_in_a_dead_writers_temp(tmp_path):
    from avatar3d.io import atomic

    target = tmp_path / "cap"
    dead = tmp_path / f".cap.tmp-{_dead_pid()}-{atomic._HOST}-0123abcd"
    (dead / "images").mkdir(parents=True)
    (dead / "images" / "0.jpg").write_text("kept")
    other = tmp_path / f".cap.tmp-{_dead_pid()}-{atomic._HOST}-4567abcd"
    other.mkdir()
    assert sorted(atomic.stale_temps(target)) == sorted([dead, other])

    def commit() -> tuple[str, bool]:
        with atomic_dir(target, adopt=dead) as tmp:
            seen = (tmp / "images" / "0.jpg").read_text(), other.exists()
            (tmp / "done").write_text("1")
        return seen

    with pytest.warns(RuntimeWarning):
        seen = commit()
    assert seen == ("kept", False)
    assert _names(tmp_path) == ["cap"] and _names(target) == sorted([MARKER, "done", "images"])
