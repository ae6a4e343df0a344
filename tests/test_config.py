import pytest
import yaml

from avatar3d.config import PRESETS, AvatarConfig, load_config
from avatar3d.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    cfg = AvatarConfig.preset_config(name)
    assert cfg.preset == name
    assert cfg.train.steps > 0 and cfg.model.n_head > 0


def test_fast_is_cheaper_than_quality():
    f, q = AvatarConfig.preset_config("fast"), AvatarConfig.preset_config("quality")
    assert f.train.steps < q.train.steps and f.train.resolution < q.train.resolution


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="stepz"):
        AvatarConfig.from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="unknown key"):
        AvatarConfig.from_dict({"nonsense": 1})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="train.steps"):
        AvatarConfig.from_dict({"train": {"steps": "many"}})


def test_yaml_layering(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("preset: fast\ntrain:\n  steps: 7\n")
    cfg = load_config(p)
    assert cfg.train.steps == 7 and cfg.model.n_head == AvatarConfig.preset_config("fast").model.n_head
    back = AvatarConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml()))
    assert back == cfg


def test_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_set_overrides_any_field_and_names_bad_keys():
    from avatar3d.config import AvatarConfig, apply_overrides, parse_overrides

    cfg = AvatarConfig.preset_config("fast")
    over = parse_overrides(
        [
            "train.steps=20",
            "capture.focal=800",
            "capture.focal_search=[0.5, 6]",
            "render.background=#ff0000",
            "model.visemes=false",
        ],
        ("capture", "model", "train", "render"),
    )
    out = apply_overrides(cfg, over)
    assert (out.train.steps, out.capture.focal, out.capture.focal_search) == (20, 800.0, (0.5, 6))
    assert out.render.background == "#ff0000" and out.model.visemes is False and out.preset == "fast"
    assert cfg.train.steps != 20  # the original is untouched
    with pytest.raises(ConfigError, match="stepz"):
        apply_overrides(cfg, parse_overrides(["train.stepz=3"], ("train",)))
    with pytest.raises(ConfigError, match="integer"):
        apply_overrides(cfg, parse_overrides(["train.steps=many"], ("train",)))
    with pytest.raises(ConfigError, match="render"):
        parse_overrides(["train.steps=3"], ("render",))
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_overrides(["steps"], ("train",))


def test_one_capture_config_reads_old_unset_values():
    """Config files written before the two capture configs were merged used 0 / "" for "unset"."""
    from avatar3d.config import AvatarConfig

    c = AvatarConfig.from_dict(
        {"capture": {"max_frames": 0, "focal": 0.0, "flame_path": "", "speech_model": ""}}
    )
    assert c.capture.max_frames is None and c.capture.focal is None and c.capture.speech_model is None
    assert AvatarConfig.from_dict(yaml.safe_load(c.to_yaml())).capture == c.capture
