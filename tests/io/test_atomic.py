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
        assert re.fullmatch(r"\.capture\.tmp-[0-9a-f]+", tmp.name)
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
        assert re.fullmatch(r"\.video\.mp4\.tmp-[0-9a-f]+\.mp4", tmp.name) and not tmp.exists()
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
