"""Feature visualisations in bulk, stored in the atlas (issue #12, last bullet): equal to
``feature_visualization`` for the same settings, resumable chunk by chunk, validated when read, shown on the page.

The bundled model (64x64 grey) with 3 optimisation steps keeps this cheap. Local worker *processes* and the
Ray engine are exercised by one small test each (two spawned processes; a local Ray instance with two
tasks, skipped when Ray is not installed), both checked against the in-process result.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from optional import require_ray

import vizlib
import vizlib.atlas
from vizlib.atlas import bulk_featvis
from vizlib.errors import InputError
from vizlib.featvis import feature_visualization

STEPS = 3
LAYER = "conv2d_1"  # 8 channels


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fv-images")
    for name in ("cat", "coins", "astronaut_face"):
        shutil.copy(vizlib.images.sample_path(name), folder)
    return folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # feature_visualization's disk cache must not serve the reference from another run.
    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def atlas(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("fv-atlas") / "atlas"
    return vizlib.atlas.build("emotion_cnn", images, out, layers=[LAYER, "conv2d_7"], top=2,
                              featvis=[LAYER], featvis_steps=STEPS, workers=1)


def _stored(a, layer: str, n: int) -> np.ndarray:
    return np.stack([a.feature_visualization(layer, c) for c in range(n)])


def test_stored_images_equal_feature_visualization(atlas, bundled):
    assert atlas.featvis_layers == [LAYER]
    s = atlas.feature_visualization_settings(LAYER)
    assert s["steps"] == STEPS and s["seed"] == 0 and s["channels"] == 1
    got = _stored(atlas, LAYER, 8)
    ref = feature_visualization(bundled, LAYER, list(range(8)), size=tuple(s["size"]), steps=STEPS, seed=0)
    assert got.dtype == np.uint8 and got.shape == ref.shape == (8, *s["size"], 1)
    np.testing.assert_array_equal(got, ref)
    assert len({g.tobytes() for g in got}) > 1  # real, different images per channel
    assert atlas.feature_visualization("conv2d_7", 0) is None  # not asked for
    entry = atlas.manifest["featvis"]["layers"][LAYER]
    assert entry["status"] == "complete" and entry["channels_count"] == 8
    assert (atlas.directory / entry["file"]).is_file()
    assert not list((atlas.directory / "featvis").glob("*.part*"))  # merged, parts removed


def test_resume_after_a_partial_run_skips_finished_chunks(atlas, bundled, tmp_path):
    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out, ignore=shutil.ignore_patterns("featvis"))
    m = vizlib.contract.as_model("emotion_cnn")

    class Killed(Exception):
        pass

    calls = []

    def die_after_first_chunk(done: int, total: int) -> None:
        calls.append(done)
        if done >= 4:
            raise Killed()

    with pytest.raises(Killed):
        bulk_featvis.compute(out, m, [LAYER], steps=STEPS, chunk=4, workers=1, progress=die_after_first_chunk)
    first = bulk_featvis.part_path(out, LAYER, 0)
    assert first.is_file() and not bulk_featvis.part_path(out, LAYER, 1).exists()
    assert vizlib.atlas.load(out).featvis_layers == []  # the manifest says "building": nothing served yet
    progress = []
    bulk_featvis.compute(out, m, [LAYER], steps=STEPS, chunk=4, workers=1,
                         progress=lambda d, t: progress.append((d, t)))
    assert progress[0] == (4, 8) and progress[-1] == (8, 8)  # the committed chunk was not recomputed
    resumed = vizlib.atlas.load(out)
    np.testing.assert_array_equal(_stored(resumed, LAYER, 8), _stored(atlas, LAYER, 8))
    # Running it again is a no-op that keeps the result.
    progress.clear()
    bulk_featvis.compute(out, m, [LAYER], steps=STEPS, chunk=4, workers=1,
                         progress=lambda d, t: progress.append((d, t)))
    assert progress == [(8, 8)]


def test_reading_validates(atlas, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out)
    path = bulk_featvis.layer_path(out, LAYER)
    table = pq.read_table(path)

    pq.write_table(table.drop_columns(["seed"]), path)  # wrong schema
    with pytest.raises(InputError, match="columns"):
        vizlib.atlas.load(out).feature_visualization(LAYER, 0)

    pngs = table.column("png").to_pylist()
    pngs[0] = b"\x89PNG not really"
    pq.write_table(table.set_column(table.schema.get_field_index("png"), table.schema.field("png"), pa.array(pngs, pa.binary())), path)
    with pytest.raises(InputError, match="PNG"):
        vizlib.atlas.load(out).feature_visualization(LAYER, 0)

    heights = [999] * table.num_rows  # sizes over the cap
    pq.write_table(table.set_column(table.schema.get_field_index("height"), table.schema.field("height"),
                                    pa.array(heights, pa.int32())), path)
    with pytest.raises(InputError, match="out-of-range"):
        vizlib.atlas.load(out).feature_visualization(LAYER, 0)

    pq.write_table(table.slice(0, 5), path)  # channels missing
    with pytest.raises(InputError, match="channels"):
        vizlib.atlas.load(out).feature_visualization(LAYER, 0)

    path.unlink()
    os.symlink(atlas.directory / "featvis" / path.name, path)  # a symlink is not a regular file
    with pytest.raises(InputError):
        vizlib.atlas.load(out).feature_visualization(LAYER, 0)


def test_cli_featvis_adds_to_an_existing_atlas(atlas, tmp_path, bundled):
    from vizlib.atlas.__main__ import main

    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out)
    assert main(["featvis", "--out", str(out), "--model", "emotion_cnn", "--layers", "conv2d_7",
                 "--steps", str(STEPS), "--workers", "1", "--quiet"]) == 0
    a = vizlib.atlas.load(out)
    assert set(a.featvis_layers) == {LAYER, "conv2d_7"}  # the earlier layer is kept
    s = a.feature_visualization_settings("conv2d_7")
    ref = feature_visualization(bundled, "conv2d_7", [0, 6], size=tuple(s["size"]), steps=STEPS, seed=0)
    np.testing.assert_array_equal(np.stack([a.feature_visualization("conv2d_7", c) for c in (0, 6)]), ref)
    # A rebuild on the same directory (atlas resumed) keeps the stored visualisations.
    a2 = vizlib.atlas.build("emotion_cnn", atlas.manifest["images"]["source"], out, layers=[LAYER, "conv2d_7"],
                            top=2, workers=1)
    assert set(a2.featvis_layers) == {LAYER, "conv2d_7"}
    # The wrong model is refused.
    assert main(["featvis", "--out", str(out), "--model", "emotion_cnn", "--weights", "untrained",
                 "--steps", "1", "--quiet"]) == 2


def test_worker_processes_give_the_same_images(atlas, tmp_path):
    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out, ignore=shutil.ignore_patterns("featvis"))
    m = vizlib.contract.as_model("emotion_cnn")
    spec = vizlib.atlas.job.model_spec("emotion_cnn", m, "imagenet", None)
    bulk_featvis.compute(out, m, [LAYER], steps=STEPS, chunk=4, workers=2, spec=spec)
    np.testing.assert_array_equal(_stored(vizlib.atlas.load(out), LAYER, 8), _stored(atlas, LAYER, 8))


def test_page_shows_the_stored_image_beside_the_top_crops(atlas, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    shutil.copytree(atlas.directory, root / "a")
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(root))

    def page() -> None:
        import vizlib.atlas
        from ui import atlas as ua
        from vizlib.settings import settings

        a = vizlib.atlas.load("a", root=settings().atlas_root)
        ua.show_top(a, "conv2d_1", 2)
        ua.show_top(a, "conv2d_7", 2, key="other")

    at = AppTest.from_function(page, default_timeout=120).run()
    assert not at.exception
    looks = [m for m in at.markdown if "What this channel looks for" in m.value]
    assert len(looks) == 1  # conv2d_1 has stored images, conv2d_7 not
    assert len(at.get("image")) == 1


def test_ray_tasks_give_the_same_images(atlas, tmp_path, monkeypatch):
    require_ray()
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        monkeypatch.setenv(k, v)
    from vizlib.atlas.job import add_featvis

    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out, ignore=shutil.ignore_patterns("featvis"))
    a = add_featvis("emotion_cnn", out, layers=[LAYER], steps=STEPS, engine="ray", workers=2,
                    ray_init={"num_cpus": 2})
    np.testing.assert_array_equal(_stored(a, LAYER, 8), _stored(atlas, LAYER, 8))


def test_images_of_an_older_algorithm_are_recomputed_not_mixed(atlas, tmp_path):
    """Resuming an atlas whose stored images came from another featvis algorithm recomputes every chunk."""
    import json

    out = tmp_path / "atlas"
    shutil.copytree(atlas.directory, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["featvis"]["algorithm"] = "fv1"  # as written by the Lucid-recipe version
    (out / "manifest.json").write_text(json.dumps(manifest))
    m = vizlib.contract.as_model("emotion_cnn")
    progress = []
    bulk_featvis.compute(out, m, [LAYER], steps=STEPS, chunk=4, workers=1,
                         progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (8, 8) and len(progress) > 1  # computed chunk by chunk, not taken as complete
    again = vizlib.atlas.load(out)
    assert again.manifest["featvis"]["algorithm"] != "fv1"
    np.testing.assert_array_equal(_stored(again, LAYER, 8), _stored(atlas, LAYER, 8))
