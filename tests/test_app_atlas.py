"""The dataset atlas view on the whole page (issue #12): a link reopens it; a mismatch says so."""

from __future__ import annotations

import pytest

from test_app import assert_clean, make_app, titles


@pytest.fixture(scope="module")
def atlas_root(tmp_path_factory):
    import vizlib.atlas

    root = tmp_path_factory.mktemp("atlases")
    vizlib.atlas.build("emotion_cnn", "assets/samples", str(root / "samples"), top=5)
    return root


def test_a_link_reopens_an_atlas_view(offline, atlas_root, monkeypatch):
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(atlas_root))
    at = make_app(view="atlas", atlas="samples", layer="conv2d_7", channel="3").run()
    assert_clean(at)
    assert any("conv2d_7 · channel 3: the 5 of 13 images" in t for t in titles(at)), titles(at)
    assert at.query_params["atlas"] == ["samples"]


def test_an_atlas_of_another_model_is_refused_clearly(offline, atlas_root, monkeypatch):
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(atlas_root))
    at = make_app(view="atlas", atlas="samples", model="mobilenet_v2", weights="untrained").run()
    assert not at.exception
    assert at.warning and "built with Facial expression CNN" in at.warning[0].value, [w.value for w in at.warning]


def test_a_link_cannot_reach_outside_the_root(offline, atlas_root, monkeypatch):
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(atlas_root / "samples" / "stats"))
    at = make_app(view="atlas", atlas="../../samples").run()
    assert not at.exception
    assert not any("images that excite" in t for t in titles(at))
