import pytest

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
