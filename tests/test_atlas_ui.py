"""The atlas on the page (ui/atlas.py) through Streamlit's AppTest: open under the root, model check, mosaic,
build from uploads; and the zipped-atlas upload path."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import vizlib
import vizlib.atlas
from vizlib.atlas.store import extract_zip
from vizlib.errors import InputError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("atlas-root")
    images = base.parent / (base.name + "-images")
    images.mkdir()
    for name in ("astronaut_face", "cat", "coins", "coffee", "camera", "grass"):
        shutil.copy(vizlib.images.sample_path(name), images)
    vizlib.atlas.build("emotion_cnn", images, base / "faces" / "v1", top=3)
    return base


@pytest.fixture()
def env(root, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(root))
    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path / "cache"))
    return root


def _page(weights: str = "imagenet", uploads: bool = False, name: str = "") -> None:
    import streamlit as st

    import vizlib
    from ui import atlas as ua

    @st.cache_resource
    def model(w: str):
        return vizlib.load_model("emotion_cnn", weights=None if w == "untrained" else w)

    m = model(weights)
    ups = [(n, n, vizlib.load_sample(n)) for n in ("cat", "coins", "astronaut_face")] if uploads else []
    item = ua.atlas_panel(m, ups, layer="conv2d_7", channel=3, name=name or None)
    if item:
        st.write("picked", item["path"])


def _app(**kwargs) -> AppTest:
    return AppTest.from_function(_page, kwargs=kwargs, default_timeout=120)


def test_lists_and_opens_an_atlas_under_the_root(env):
    at = _app().run()
    assert not at.exception and not at.error
    box = at.selectbox[0]
    assert box.options == ["faces/v1", "Upload a zipped atlas…"]
    box.select("faces/v1").run()
    assert not at.exception and not at.error and not at.warning
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert any("receptive field" in c.value and "6 images, 0 skipped" in c.value for c in at.caption)


def test_the_link_preselects_an_atlas(env):
    at = _app(name="faces/v1").run()
    assert at.selectbox[0].value == "faces/v1" and len(at.get("plotly_chart")) == 1
    at = _app(name="../faces/v1").run()  # not an option: ignored, nothing opened
    assert at.selectbox[0].value is None and not at.get("plotly_chart")


def test_an_atlas_of_another_model_says_so(env):
    at = _app(weights="untrained").run()
    at.selectbox[0].select("faces/v1").run()
    assert not at.exception
    assert at.warning and "different weights" in at.warning[0].value and "Switch the model" in at.warning[0].value
    assert not at.get("plotly_chart")


def test_no_root_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("CNN_VIZ_ATLAS_ROOT", raising=False)
    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path))
    at = _app().run()
    assert not at.exception and at.selectbox[0].options == ["Upload a zipped atlas…"]
    from ui import atlas as ua

    with pytest.raises(InputError, match="no atlas folder"):
        ua.open_named("faces/v1")


def test_build_from_uploads_with_a_progress_bar(env):
    at = _app(uploads=True).run()
    assert not at.exception
    build = [b for b in at.button if "Build an atlas" in b.label]
    assert build
    build[0].click().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1  # the new atlas is shown at once
    assert any("3 images, 0 skipped" in c.value for c in at.caption)
    builds = list((Path(at.session_state["atlas-build-built"].directory)).parents[1].iterdir())
    assert len(builds) == 1  # under the server's cache folder, keyed by content


def test_page_builds_are_size_limited(tmp_path, bundled, monkeypatch):
    from ui import atlas as ua

    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path))
    img = vizlib.load_sample("cat")
    with pytest.raises(InputError, match="at most"):
        ua.build_small(bundled, [(f"{i}.png", img) for i in range(ua.PAGE_MAX_IMAGES + 1)])


def test_a_damaged_page_build_is_rebuilt_not_failed_on_every_visit(tmp_path, bundled, monkeypatch):
    from ui import atlas as ua

    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path))
    images = [(f"{name}.png", vizlib.load_sample(name)) for name in ("cat", "coins", "astronaut_face")]
    first = ua.build_small(bundled, images)
    (first.directory / "manifest.json").write_text("{ truncated")  # a killed write, a full disk...
    again = ua.build_small(bundled, images)
    assert again.directory == first.directory
    assert again.top("conv2d_7", 0) == first.top("conv2d_7", 0)


def test_clicked_cell_gives_the_row_and_its_picture(root):
    from ui.atlas import picked_item

    atlas = vizlib.atlas.load("faces/v1", root=root)
    rows = atlas.top("conv2d_7", 3)
    item = picked_item({"selection": {"points": [{"customdata": 1}]}}, atlas, rows)
    assert item["path"] == rows[1]["path"] and item["rank"] == 1 and item["image"].mode == "RGB"
    assert picked_item({"selection": {"points": []}}, atlas, rows) is None
    assert picked_item({"selection": {"points": [{"customdata": 99}]}}, atlas, rows) is None


def test_zipped_atlas_upload(root, tmp_path):
    buf = io.BytesIO()
    src = root / "faces" / "v1"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in src.rglob("*"):
            if p.is_file():
                zf.write(p, "v1/" + p.relative_to(src).as_posix())
        zf.writestr("v1/../../evil.txt", b"no")
        zf.writestr("v1/notes.pkl", b"\x80\x04junk")
    atlas = extract_zip(buf.getvalue(), tmp_path / "x")
    assert atlas.top("conv2d_7", 0) == vizlib.atlas.load(src).top("conv2d_7", 0)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["crops.parquet", "manifest.json", "stats",
                                                                   "thumbs.parquet", "top.parquet"]
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(InputError, match="no atlas"):
        extract_zip(_zip({"readme.txt": b"hi"}), tmp_path / "y")
    with pytest.raises(InputError, match="not a ZIP"):
        extract_zip(b"PK\x03\x04 nope", tmp_path / "z")
    with pytest.raises(InputError, match="zip bombs"):
        extract_zip(_zip({"manifest.json": b"{}", "top.parquet": b"\0" * (8 * 2**20)}), tmp_path / "w")


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_link_reopens_an_atlas_image(env):
    from ui import atlas as ua

    atlas = vizlib.atlas.load("faces/v1", root=env)
    row = atlas.top("conv2d_7", 0)[0]
    path = row["path"]
    opened = ua.image_from_link("faces/v1", path)  # the exact model view: the page shows the row's value
    assert atlas.exact_views and opened.size == atlas.view(path).size
    shown = vizlib.activations(vizlib.load_model("emotion_cnn"), [opened], ["conv2d_7"])["conv2d_7"][0][..., 0]
    np.testing.assert_allclose(shown.max(), row["value"], rtol=1e-5, atol=1e-6)
    for bad in (("../faces/v1", path), ("faces/v1", "../../etc/passwd"), ("/tmp", path)):
        with pytest.raises(InputError):
            ua.image_from_link(*bad)
