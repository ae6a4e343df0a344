"""``avatar3d eval`` bad input: one line naming the problem, exit code 2, no report written."""

from avatar3d.cli import main


def _run(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_eval_missing_avatar_dir(tmp_path, capsys):
    video = tmp_path / "heldout.mp4"
    video.write_bytes(b"\x00" * 100)
    out = tmp_path / "report.json"
    code, err = _run(["eval", tmp_path / "no_avatar", "--video", video, "-o", out], capsys)
    assert code == 2 and len(err) == 1
    assert "avatar directory not found" in err[0] and "no_avatar" in err[0]
    assert not out.exists() and not (tmp_path / "report_plots.png").exists()


def test_eval_missing_video(tmp_path, capsys):
    (tmp_path / "av").mkdir()
    code, err = _run(
        ["eval", tmp_path / "av", "--video", tmp_path / "gone.mp4", "-o", tmp_path / "r.json"], capsys
    )
    assert code == 2 and len(err) == 1 and "gone.mp4" in err[0]
    assert not (tmp_path / "r.json").exists()


def test_eval_not_an_avatar_dir(tmp_path, capsys):
    (tmp_path / "av").mkdir()
    video = tmp_path / "heldout.mp4"
    video.write_bytes(b"\x00" * 100)
    code, err = _run(["eval", tmp_path / "av", "--video", video, "-o", tmp_path / "r.json"], capsys)
    assert code == 2 and len(err) == 1 and "avatar" in err[0]
    assert not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["av", "heldout.mp4"]  # no report, no temp file


def test_eval_missing_weights_file_and_bad_max_frames(tmp_path, capsys):
    (tmp_path / "av").mkdir()
    video = tmp_path / "heldout.mp4"
    video.write_bytes(b"\x00" * 100)
    code, err = _run(
        [
            "eval",
            tmp_path / "av",
            "--video",
            video,
            "-o",
            tmp_path / "r.json",
            "--lpips-weights",
            tmp_path / "alex.pth",
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "--lpips-weights" in err[0] and "alex.pth" in err[0]
    code, err = _run(
        ["eval", tmp_path / "av", "--video", video, "-o", tmp_path / "r.json", "--max-frames", "0"], capsys
    )
    assert code == 2 and len(err) == 1 and "--max-frames" in err[0]
