"""avatar3d.workdir: a reused --workdir must belong to the same input and capture settings."""

from __future__ import annotations

import json

import pytest

from avatar3d.workdir import RECORD, WorkdirError, WorkdirLock, check_workdir, file_digest

CAP = {"max_size": 384, "stride": 1, "speech_model": ""}


def test_the_same_input_is_accepted_and_recorded(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"a" * 1000)
    work = tmp_path / "w"
    work.mkdir()
    check_workdir(work, video, CAP)
    rec = json.loads((work / RECORD).read_text())
    assert rec["input"]["digest"] == file_digest(video) and rec["capture"] == CAP
    check_workdir(work, video, CAP)
    moved = tmp_path / "moved.mp4"  # the same contents under another name: still the same input
    video.rename(moved)
    check_workdir(work, moved, CAP)


def test_another_clip_is_refused_naming_both(tmp_path):
    a, c = tmp_path / "talk_a.mp4", tmp_path / "talk_c.mp4"
    a.write_bytes(b"a" * 1000)
    c.write_bytes(b"c" * 1000)
    work = tmp_path / "w"
    work.mkdir()
    check_workdir(work, a, CAP)
    with pytest.raises(WorkdirError) as e:
        check_workdir(work, c, CAP)
    msg = str(e.value)
    assert "talk_a.mp4" in msg and "talk_c.mp4" in msg and "new --workdir" in msg and "\n" not in msg
    a.write_bytes(b"b" * 1000)  # the same path, other contents
    with pytest.raises(WorkdirError, match="talk_a.mp4 changed since"):
        check_workdir(work, a, CAP)


def test_a_capture_made_with_other_settings_is_refused(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"a" * 1000)
    work = tmp_path / "w"
    (work / "capture").mkdir(parents=True)
    check_workdir(work, video, CAP)
    with pytest.raises(WorkdirError, match=r"max_size 384 there, 512 now.*remove .*capture"):
        check_workdir(work, video, {**CAP, "max_size": 512})


def test_a_workdir_from_before_the_record_is_checked_by_its_capture_source(tmp_path):
    a, c = tmp_path / "talk_a.mp4", tmp_path / "talk_c.mp4"
    a.write_bytes(b"a" * 1000)
    c.write_bytes(b"c" * 1000)
    work = tmp_path / "w"
    (work / "capture").mkdir(parents=True)
    (work / "capture" / "transforms.json").write_text(json.dumps({"avatar3d": {}, "source": str(a)}))
    with pytest.raises(WorkdirError, match="holds the capture of .*talk_a.mp4, not of .*talk_c.mp4"):
        check_workdir(work, c, CAP)
    check_workdir(work, a, CAP)
    assert (work / RECORD).is_file()


def test_large_files_are_hashed_by_samples(tmp_path, monkeypatch):
    import avatar3d.workdir as wd

    monkeypatch.setattr(wd, "_FULL_BELOW", 1000)
    monkeypatch.setattr(wd, "_CHUNK", 64)
    p = tmp_path / "big.bin"
    p.write_bytes(bytes(range(256)) * 100)
    d0 = file_digest(p)
    with open(p, "r+b") as f:
        f.seek(0)
        f.write(b"\xff")  # inside the first sample
    assert file_digest(p) != d0


def test_a_workdir_in_use_is_refused(tmp_path):
    lock = WorkdirLock(tmp_path)
    try:
        with pytest.raises(WorkdirError, match="in use by another fit"):
            WorkdirLock(tmp_path)
    finally:
        lock.release()
    WorkdirLock(tmp_path).release()
