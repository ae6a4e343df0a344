"""Avatar directories of every supported format version load; the current one is what save writes."""

import json

import numpy as np
import pytest
from _tiny import tiny_avatar

from avatar3d import Avatar
from avatar3d.errors import FormatError
from avatar3d.io.meta import FORMAT_VERSION, AvatarMeta


def _make_v1(path):
    """Rewrite a saved directory the way version 1 wrote it: no front-end record, no id, no source size."""
    meta = json.loads((path / "avatar.json").read_text())
    for key in ("audio_front_end", "avatar_id", "source_size"):
        meta.pop(key, None)
    meta["version"] = 1
    (path / "avatar.json").write_text(json.dumps(meta))


def test_save_writes_the_current_version_with_every_key(tmp_path):
    tiny_avatar().save(tmp_path / "av")
    meta = json.loads((tmp_path / "av" / "avatar.json").read_text())
    assert meta["version"] == FORMAT_VERSION == 2
    assert {"audio_front_end", "avatar_id", "source_size"} <= set(meta)


def test_version_1_directory_loads_migrated_and_renders_the_same(tmp_path):
    av = tiny_avatar()
    av.save(tmp_path / "av")
    _make_v1(tmp_path / "av")
    old = Avatar.load(tmp_path / "av")
    assert isinstance(old.meta, AvatarMeta) and old.meta.n_visemes == 0
    assert old.meta.front_end.name == "mel"
    assert not old.config.model.visemes and not old.config.model.mouth_split  # the old mouth binding
    assert 0 < old.avatar_id < 2**32  # derived from the weights, stable across loads
    assert Avatar.load(tmp_path / "av").avatar_id == old.avatar_id
    wave = np.zeros(16000, np.float32)
    a = av.render((wave, 16000), progress=False, background="black").frames
    b = old.render((wave, 16000), progress=False, background="black").frames
    assert np.array_equal(a, b)
    old.save(tmp_path / "again")  # saved again: the current version
    assert json.loads((tmp_path / "again" / "avatar.json").read_text())["version"] == FORMAT_VERSION


def test_a_future_version_is_one_clear_error(tmp_path):
    tiny_avatar().save(tmp_path / "av")
    meta = json.loads((tmp_path / "av" / "avatar.json").read_text())
    meta["version"] = 99
    (tmp_path / "av" / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="version 99 is not supported"):
        Avatar.load(tmp_path / "av")


def test_meta_round_trips_through_its_mapping():
    meta = tiny_avatar().meta
    assert AvatarMeta.from_dict(meta.to_dict()) == meta
