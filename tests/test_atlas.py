"""Dataset atlas (issue #12), local engine: correctness against a brute-force NumPy reference, resumption
after SIGKILL, bad images, ZIP / Parquet / Arrow inputs, receptive fields, and a reader that trusts nothing."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import vizlib
import vizlib.atlas
from vizlib.atlas import store
from vizlib.atlas.pipeline import LayerStats, TopK
from vizlib.atlas.synthetic import make_dataset
from vizlib.errors import InputError

REPO = Path(__file__).resolve().parent.parent
K = 5
BATCH, SHARD = 8, 16


def _dataset(root: Path) -> Path:
    """~40 generated images in subfolders, duplicates (ties), a broken file, junk and a hidden file."""
    make_dataset(root, 36, side=96, seed=1)
    first = sorted(root.rglob("*.jpg"))[0]
    for i in range(2):  # byte-identical copies: equal values everywhere, ranked by listing order
        shutil.copy(first, root / f"dup{i}.jpg")
    (root / "part1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(first.read_bytes())
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("atlas-data") / "images")


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas-out") / "atlas"
    return vizlib.atlas.build("emotion_cnn", data, out, top=K, batch_size=BATCH, shard_size=SHARD)


def _image_names(root: Path) -> list[str]:
    exts = {".jpg", ".png"}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix in exts and not p.name.startswith("."))


def reference(model, root: Path, names: list[str], layer: str):
    """Brute force: decode every image as the page does, one sub-model to the layer, NumPy max/argmax/sort."""
    import keras

    from vizlib.layers import trace

    images, ids = [], []
    for i, name in enumerate(names):
        try:
            images.append(vizlib.load_image(root / name))
            ids.append(i)
        except InputError:
            pass
    batch = vizlib.to_batch(images, model.input_size, channels=model.channels, preprocess=model.preprocess)
    tr = trace(model.model)
    acts = np.asarray(keras.Model(tr.input, tr.outputs[layer])(batch, training=False))
    n, lh, lw, c = acts.shape
    flat = acts.reshape(n, lh * lw, c)
    return np.array(ids), flat.max(axis=1), flat.argmax(axis=1), flat.mean(axis=1), lw


def test_top_k_equals_brute_force_reference(built, data, bundled):
    names = _image_names(data)
    assert built.manifest["counts"] == {"images": len(names), "decoded": len(names) - 1, "failed": 1}
    for layer in built.layers:
        ids, mx, am, mean, w = reference(bundled, data, names, layer)
        for c in range(mx.shape[1]):
            order = sorted(range(len(ids)), key=lambda j: (-mx[j, c], ids[j]))[:K]
            rows = built.top(layer, c)
            assert [r["path"] for r in rows] == [names[ids[j]] for j in order], (layer, c)
            np.testing.assert_allclose([r["value"] for r in rows], [mx[j, c] for j in order], rtol=1e-5, atol=1e-5)
            assert [(r["row"], r["col"]) for r in rows] == [divmod(int(am[j, c]), w) for j in order], (layer, c)
            np.testing.assert_allclose([r["mean"] for r in rows], [mean[j, c] for j in order], rtol=1e-4, atol=1e-5)
            assert [r["rank"] for r in rows] == list(range(len(rows)))


def _mixed_jpegs(root: Path, n: int, seed: int) -> list[str]:
    """``n`` JPEGs of mixed sizes (16 px to 2600 px, some with an EXIF quarter turn): small, fast to make.

    The big ones are what a reduced-scale decode sized to the model's input got wrong.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    names = []
    for i in range(n):
        if i % 40 == 7:
            w, h = int(rng.integers(1100, 2600)), int(rng.integers(900, 2000))
        else:
            w, h = (int(v) for v in rng.integers(16, 320, 2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.02, 0.4, 3) * 48 / max(w, h) * rng.uniform(1, 20)
        arr = np.stack([127 + 120 * np.sin(x * f[c] + y * f[(c + 1) % 3] + c) for c in range(3)], -1)
        if max(w, h) < 400:
            arr += rng.normal(0, 25, arr.shape)
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        if i % 9 == 4:
            exif[0x0112] = 6
        name = f"{i // 100}/img{i:04d}.jpg"
        (root / name).parent.mkdir(exist_ok=True)
        image.save(root / name, format="JPEG", quality=int(rng.integers(60, 95)), exif=exif)
        names.append(name)
    return names


def test_atlas_rows_equal_what_the_public_api_gives_for_each_image(bundled, tmp_path):
    """One model view (issue #19): every top-k row's value is ``vizlib.activations(model,
    [vizlib.load_image(path)], [layer])``'s maximum for that image, to 1e-5 relative, in the same order."""
    root = tmp_path / "mixed"
    names = _mixed_jpegs(root, 260, seed=19)
    atlas = vizlib.atlas.build(bundled, root, tmp_path / "atlas", top=K, batch_size=32, shard_size=64)
    assert atlas.manifest["counts"]["decoded"] == len(names)
    layers = list(atlas.layers)
    maxima = {layer: [] for layer in layers}
    for name in names:  # brute force, one image at a time, exactly as a notebook (or the page) asks
        acts = vizlib.activations(bundled, [vizlib.load_image(root / name)], layers)
        for layer in layers:
            maxima[layer].append(acts[layer][0].max(axis=(0, 1)))
    big = [i for i in range(len(names)) if i % 40 == 7]
    for layer in layers:
        mx = np.stack(maxima[layer])
        for c in range(mx.shape[1]):
            order = sorted(range(len(names)), key=lambda j: (-mx[j, c], j))[:K]
            rows = atlas.top(layer, c)
            assert [r["path"] for r in rows] == [names[j] for j in order], (layer, c)
            np.testing.assert_allclose([r["value"] for r in rows], mx[order, c], rtol=1e-5, atol=1e-6)
        got = {p: m for part in atlas.stats(layer) for p, m in zip(part["path"], part["max"])}
        np.testing.assert_allclose(np.stack([got[names[i]] for i in big]), mx[big], rtol=1e-5, atol=1e-6)
    # ... and opening a row's image in the page (the picture the atlas stores for it) shows that value too.
    assert atlas.exact_views
    for layer in layers:
        for c in range(0, acts[layer].shape[-1], 3):
            for r in atlas.top(layer, c)[:3]:
                reopened = vizlib.activations(bundled, [atlas.picture(r["path"])], [layer])[layer][0][..., c]
                np.testing.assert_allclose(reopened.max(), r["value"], rtol=1e-5, atol=1e-6)
                assert np.unravel_index(int(np.argmax(reopened)), reopened.shape) == (r["row"], r["col"])


def test_ties_go_to_the_earlier_image(built):
    """dup0.jpg and dup1.jpg are copies of one file: wherever they rank, the earlier listed comes first."""
    seen = 0
    for layer in built.layers:
        for c in range(built.layer(layer)["shape"][2]):
            paths = [r["path"] for r in built.top(layer, c)]
            if "dup0.jpg" in paths and "dup1.jpg" in paths:
                assert paths.index("dup0.jpg") < paths.index("dup1.jpg")
                seen += 1
    parts = list(built.stats(built.layers[-1]))  # a copy has exactly its original's numbers
    by_path = {p: m for part in parts for p, m in zip(part["path"], part["max"])}
    np.testing.assert_array_equal(by_path["dup0.jpg"], by_path["dup1.jpg"])
    assert seen > 0


def test_per_image_statistics_table(built, data, bundled):
    names = _image_names(data)
    layer = built.layers[-1]
    ids, mx, am, mean, w = reference(bundled, data, names, layer)
    parts = list(built.stats(layer))
    got_ids = np.concatenate([p["id"] for p in parts])
    np.testing.assert_array_equal(got_ids, ids)  # the broken image has no statistics
    np.testing.assert_allclose(np.concatenate([p["max"] for p in parts]), mx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([p["mean"] for p in parts]), mean, rtol=1e-4, atol=1e-5)
    rows = np.concatenate([p["row"] for p in parts])
    np.testing.assert_array_equal(rows, am // w)
    assert len(parts) == -(-len(names) // SHARD)


def test_bad_images_are_skipped_counted_and_listed(built):
    m = built.manifest
    assert m["counts"]["failed"] == 1
    assert [f["path"] for f in m["failures"]] == ["part1/broken.png"]
    assert "corrupt" in m["failures"][0]["error"] or "could not" in m["failures"][0]["error"]
    every = {r["path"] for layer in built.layers for c in range(built.layer(layer)["shape"][2])
             for r in built.top(layer, c)}
    assert "part1/broken.png" not in every and ".hidden.jpg" not in every and "notes.txt" not in every


def test_manifest_records_the_job(built, bundled):
    m = json.loads((built.directory / "manifest.json").read_text())
    assert m["status"] == "complete" and m["format"] == "vizlib-atlas"
    assert m["model"]["key"] == "emotion_cnn" and m["model"]["weights_digest"] == bundled.weights_digest()
    assert m["model"]["preprocess"] == bundled.preprocess_name
    assert [layer["name"] for layer in m["layers"]] == vizlib.atlas.default_layers(bundled) == ["conv2d_1", "conv2d_7"]
    assert m["top_k"] == K and m["engine"] == "local"
    assert len(m["images"]["fingerprint"]) == 64 and m["images"]["kind"] == "folder"
    assert m["job"]["shards"] == len(built.shard_files())
    assert m["tables"]["top"]["rows"] == sum(layer["shape"][2] for layer in m["layers"]) * K
    assert m["time"]["seconds"] > 0 and m["runs"][-1]["engine"] == "local"


def test_crops_and_thumbnails(built):
    layer = "conv2d_1"  # 3x3 receptive field
    rows = built.top(layer, 2)
    crops = built.crops(layer, 2)
    assert len(crops) == len(rows) == K
    for r, crop in zip(rows, crops):
        assert (r["bottom"] - r["top"], r["right"] - r["left"]) == (3, 3)
        assert (r["top"], r["left"]) == (r["row"], r["col"])  # valid 3x3 conv: the field starts at the unit
        assert crop.size == (3, 3)
    thumb = built.image(rows[0]["path"])
    assert max(thumb.size) <= 256 and thumb.mode == "RGB"
    with pytest.raises(InputError):
        built.image("no/such.jpg")
    last = built.top("conv2d_7", 0)[0]
    assert (last["top"], last["left"], last["bottom"], last["right"]) == (0, 0, 64, 64)


def test_model_check(built, bundled):
    assert built.model_mismatch(bundled) is None
    other = vizlib.load_model("emotion_cnn", weights=None)  # same architecture, untrained
    msg = built.model_mismatch(other)
    assert msg and "different weights" in msg and "untrained" in msg and "Switch the model" in msg


# --------------------------------------------------------------------- inputs


def test_zip_parquet_and_arrow_inputs_give_the_same_atlas(built, data, tmp_path):
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    names = _image_names(data)
    zpath = tmp_path / "images.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name in reversed(names):  # archive order doesn't matter: members are listed sorted
            zf.write(data / name, name)
        zf.writestr("__MACOSX/._x.jpg", b"junk")
        zf.writestr("readme.txt", b"junk")
    from_zip = vizlib.atlas.build("emotion_cnn", zpath, tmp_path / "z", top=K, batch_size=BATCH, shard_size=SHARD)
    for layer in built.layers:
        for c in (0, 3):
            assert from_zip.top(layer, c) == built.top(layer, c)
    assert from_zip.manifest["images"]["fingerprint"] == built.manifest["images"]["fingerprint"]

    table = pa.table({"image": [(data / n).read_bytes() for n in names], "label": names})
    pq.write_table(table, tmp_path / "images.parquet", row_group_size=7)
    feather.write_feather(table, tmp_path / "images.arrow", chunksize=9)
    for src in ("images.parquet", "images.arrow"):
        got = vizlib.atlas.build("emotion_cnn", tmp_path / src, tmp_path / src.replace(".", "_"), top=K,
                                 batch_size=BATCH, shard_size=SHARD)
        assert got.manifest["counts"] == built.manifest["counts"]
        for layer in built.layers:
            for c in (0, 5):
                want = built.top(layer, c)
                rows = got.top(layer, c)
                assert [r["path"] for r in rows] == [str(names.index(r["path"])) for r in want]  # path = row id
                assert [(r["value"], r["row"], r["col"]) for r in rows] == [(r["value"], r["row"], r["col"]) for r in want]
        assert got.manifest["failures"] == [{"path": str(names.index("part1/broken.png")),
                                             "error": got.manifest["failures"][0]["error"]}]


def test_hugging_face_style_struct_column(tmp_path, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _image_names(data)[:6]
    col = pa.array([{"bytes": (data / n).read_bytes(), "path": n} for n in names])
    pq.write_table(pa.table({"image": col}), tmp_path / "hf.parquet")
    got = vizlib.atlas.build("emotion_cnn", tmp_path / "hf.parquet", tmp_path / "out", top=2, layers=["conv2d_7"])
    assert got.manifest["counts"]["decoded"] == 6 and got.layers == ["conv2d_7"]


def test_symlinks_out_of_the_images_folder_are_not_followed(tmp_path, data):
    root = tmp_path / "imgs"
    root.mkdir()
    shutil.copy(sorted(data.rglob("*.jpg"))[0], root / "a.jpg")
    outside = tmp_path / "secret.jpg"
    shutil.copy(sorted(data.rglob("*.jpg"))[1], outside)
    (root / "link.jpg").symlink_to(outside)
    from vizlib.atlas.sources import list_source

    assert list_source(root).names == ["a.jpg"]


def test_file_uri_images(tmp_path, data):
    from vizlib.atlas.sources import list_source

    listing = list_source(data.resolve().as_uri())
    assert listing.names == _image_names(data)


# --------------------------------------------------------------------- resumption


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vizlib.atlas", "build", *args]


def _same_atlas(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.parquet"))
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*.parquet"))
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        for volatile in ("runs", "time", "started", "finished"):
            m.pop(volatile)
    assert ma == mb


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, built, data):
    """The CLI killed (SIGKILL) after its first committed shard, then rerun: the same bytes as one clean run."""
    out = tmp_path / "atlas"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    args = _cli("--model", "emotion_cnn", "--images", str(data), "--top", str(K), "--out", str(out),
                "--batch-size", "2", "--shard-size", "2", "--quiet")
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out / "stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir() and any(p.suffix == ".parquet" for p in shards.iterdir()):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    committed = len(list(shards.glob("*.parquet")))
    n_shards = manifest["job"]["shards"]
    assert manifest["status"] == "building" and 1 <= committed < n_shards
    with pytest.raises(InputError, match="not finished"):
        vizlib.atlas.load(out)

    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [p for p in out.rglob("*.tmp")]
    resumed = vizlib.atlas.load(out)
    assert resumed.manifest["runs"][-1]["shards"] == n_shards - committed  # nothing redone, nothing lost

    clean = vizlib.atlas.build("emotion_cnn", data, tmp_path / "clean", top=K, batch_size=2, shard_size=2)
    _same_atlas(out, clean.directory)
    for layer in built.layers:  # and other batch/shard sizes give the same top-k on this machine
        for c in range(built.layer(layer)["shape"][2]):
            assert [r["path"] for r in resumed.top(layer, c)] == [r["path"] for r in built.top(layer, c)]


def test_rerun_of_a_complete_atlas_changes_nothing(built, data):
    before = {p: p.read_bytes() for p in built.directory.rglob("*.parquet")}
    again = vizlib.atlas.build("emotion_cnn", data, built.directory, top=K, batch_size=BATCH, shard_size=SHARD)
    assert again.manifest["runs"][-1]["shards"] == 0
    assert {p: p.read_bytes() for p in built.directory.rglob("*.parquet")} == before


def test_a_directory_of_another_job_is_refused(built, data, tmp_path):
    with pytest.raises(InputError, match="another job"):
        vizlib.atlas.build("emotion_cnn", data, built.directory, top=K + 1, batch_size=BATCH, shard_size=SHARD)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not empty"):
        vizlib.atlas.build("emotion_cnn", data, tmp_path / "busy", top=K)


def test_an_atlas_decoded_the_old_way_still_opens_but_is_not_resumed(built, data, tmp_path):
    """Rows of the older decoding (DCT scale of the model's input) must not be mixed with the page's decoding."""
    old = tmp_path / "old"
    shutil.copytree(built.directory, old)
    manifest = json.loads((old / store.MANIFEST).read_text())
    manifest["decode"] = {"max_side": 1024, "draft": "JPEG decoded at the smallest scale >= the model's input"}
    (old / store.MANIFEST).write_text(json.dumps(manifest))
    assert vizlib.atlas.load(old).top(built.layers[0], 0) == built.top(built.layers[0], 0)
    with pytest.raises(InputError, match="decoding"):
        vizlib.atlas.build("emotion_cnn", data, old, top=K, batch_size=BATCH, shard_size=SHARD)


def test_cli_errors_are_messages(tmp_path):
    r = subprocess.run(_cli("--model", "emotion_cnn", "--images", str(tmp_path / "nothing"), "--out",
                            str(tmp_path / "o")), env=dict(os.environ, PYTHONPATH=str(REPO)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "error: There is nothing at" in r.stderr and "Traceback" not in r.stderr


def test_cli_output_that_cannot_be_written_is_a_message(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = subprocess.run(_cli("--model", "emotion_cnn", "--images", str(data), "--out", str(blocker / "atlas")),
                       env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "error: cannot use" in r.stderr and "a_file" in r.stderr and "Not a directory" in r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr


def test_page_size_limit(data, tmp_path):
    with pytest.raises(InputError, match="limit"):
        vizlib.atlas.build("emotion_cnn", data, tmp_path / "o", max_images=10)


# --------------------------------------------------------------------- the merge


def test_top_k_merge_is_order_independent_with_ties_and_nan():
    rng = np.random.default_rng(0)
    n, c, k = 50, 4, 7
    values = rng.integers(0, 5, (n, c)).astype(np.float32)  # many ties
    values[3, 1] = np.nan
    pos = rng.integers(0, 100, (n, c)).astype(np.int32)
    ids = np.arange(n)
    results = []
    for perm in (np.arange(n), rng.permutation(n), rng.permutation(n)):
        t = TopK(c, k)
        for chunk in np.array_split(perm, 6):
            t.add(ids[chunk], LayerStats(values[chunk], pos[chunk], values[chunk]))
        results.append((t.value.copy(), t.id.copy(), t.pos.copy()))
    for v, i, p in results[1:]:
        np.testing.assert_array_equal(i, results[0][1])
        np.testing.assert_array_equal(p, results[0][2])
    for ch in range(c):
        key = np.where(np.isnan(values[:, ch]), -np.inf, values[:, ch])
        want = sorted(range(n), key=lambda j: (-key[j], j))[:k]
        assert list(results[0][1][ch]) == want


# --------------------------------------------------------------------- receptive fields


def test_receptive_field_boxes_are_sound_and_tight():
    """Pixels outside the box never change the unit; each edge row/column of the box does (a linear model)."""
    import keras

    from vizlib.receptive import receptive_fields
    from vizlib.layers import trace

    inp = keras.Input((37, 41, 2))
    x = keras.layers.Conv2D(3, 3, strides=2, padding="same")(inp)
    a = keras.layers.Conv2D(3, 5, padding="same", dilation_rate=2)(x)
    b = keras.layers.MaxPooling2D(1)(keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(x))
    b = keras.layers.Cropping2D(((1, 0), (0, 1)))(b)
    y = keras.layers.Add()([a, b])
    z = keras.layers.Conv2D(2, (3, 2), strides=(2, 3), padding="valid")(y)
    z = keras.layers.AveragePooling2D(2, strides=1, padding="same")(z)
    model = keras.Model(inp, z)
    names = [layer.name for layer in model.layers[1:]]
    fields = receptive_fields(model, names)
    tr = trace(model)
    ext = keras.Model(tr.input, [tr.outputs[n] for n in names])
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(1, 37, 41, 2)).astype(np.float32)
    base = [np.asarray(o) for o in ext(x0)]
    for li, name in enumerate(names):
        h, w, _ = base[li].shape[1:]
        for r, c in ((0, 0), (h // 2, w // 2), (h - 1, w - 1)):
            top, left, bottom, right = fields[name].box(r, c)
            outside = x0.copy()
            mask = np.ones((37, 41), bool)
            mask[top:bottom, left:right] = False
            outside[0][mask] += 3.0
            np.testing.assert_array_equal(np.asarray(ext(outside)[li])[0, r, c], base[li][0, r, c])
            if type(model.get_layer(name)).__name__ not in ("Conv2D", "Add", "AveragePooling2D"):
                continue  # padding units see nothing: their box only says where they sit
            for edge in ((slice(top, top + 1), slice(left, right)), (slice(bottom - 1, bottom), slice(left, right)),
                         (slice(top, bottom), slice(left, left + 1)), (slice(top, bottom), slice(right - 1, right))):
                probe = x0.copy()
                probe[0][edge] += rng.normal(size=probe[0][edge].shape).astype(np.float32) * 3
                assert np.abs(np.asarray(ext(probe)[li])[0, r, c] - base[li][0, r, c]).max() > 1e-6, (name, r, c)


def test_receptive_field_of_the_bundled_model_is_sound(bundled):
    import keras

    from vizlib.receptive import receptive_fields
    from vizlib.layers import trace

    names = ["conv2d_1", "conv2d_3", "conv2d_5"]
    fields = receptive_fields(bundled.model, names)
    tr = trace(bundled.model)
    ext = keras.Model(tr.input, [tr.outputs[n] for n in names])
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(1, 64, 64, 1)).astype(np.float32)
    base = [np.asarray(o) for o in ext(x0)]
    for li, name in enumerate(names):
        h, w, _ = base[li].shape[1:]
        r, c = h // 2, w // 3
        top, left, bottom, right = fields[name].box(r, c)
        assert (bottom - top) < 64
        y = x0.copy()
        mask = np.ones((64, 64), bool)
        mask[top:bottom, left:right] = False
        y[0][mask] = rng.normal(size=(int(mask.sum()), 1)).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(ext(y)[li])[0, r, c], base[li][0, r, c])


# --------------------------------------------------------------------- reading safely


@pytest.fixture()
def atlas_root(built, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(built.directory, root / "mine")
    return root


def test_load_is_confined_under_the_root(atlas_root, tmp_path):
    assert vizlib.atlas.load("mine", root=atlas_root).top("conv2d_7", 1)
    for bad in ("../root/mine", "/etc", str(atlas_root / "mine"), "mine/../../root/mine", "C:\\atlas", "mi\x00ne"):
        with pytest.raises(InputError):
            vizlib.atlas.load(bad, root=atlas_root)
    outside = tmp_path / "elsewhere"
    shutil.copytree(atlas_root / "mine", outside)
    (atlas_root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError, match="outside"):
        vizlib.atlas.load("link", root=atlas_root)
    inner = atlas_root / "mine"
    (inner / "top.parquet").unlink()
    (inner / "top.parquet").symlink_to(outside / "top.parquet")
    with pytest.raises(InputError, match="regular file"):
        vizlib.atlas.load("mine", root=atlas_root)


def _corrupt(root: Path, edit) -> None:
    m = json.loads((root / "mine" / "manifest.json").read_text())
    edit(m)
    (root / "mine" / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit", [
    lambda m: m.update(format="pickle"),
    lambda m: m.update(version=99),
    lambda m: m.update(top_k=-1),
    lambda m: m["layers"][0].update(shape=[1, 2]),
    lambda m: m["layers"].append(dict(m["layers"][0])),
    lambda m: m["model"].update(input_size="big"),
    lambda m: m.update(failures="none"),
    lambda m: m["tables"]["top"].update(rows=1),
    lambda m: m["layers"][0].update(receptive_field={"y": [0, 1, 2], "x": None, "input_size": [64, 64]}),
])
def test_malformed_manifests_are_refused(atlas_root, edit):
    _corrupt(atlas_root, edit)
    with pytest.raises(InputError):
        vizlib.atlas.load("mine", root=atlas_root)


def test_a_pickled_manifest_is_refused_unread(atlas_root):
    import pickle

    (atlas_root / "mine" / "manifest.json").write_bytes(pickle.dumps({"format": "vizlib-atlas"}))
    with pytest.raises(InputError, match="JSON"):
        vizlib.atlas.load("mine", root=atlas_root)


def test_top_table_checks(built, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def variant(name: str, change) -> Path:
        d = tmp_path / name
        shutil.copytree(built.directory, d)
        table = pq.read_table(d / "top.parquet")
        table = change(table)
        pq.write_table(table, d / "top.parquet")
        return d

    def col_set(t, name, values):
        return t.set_column(t.column_names.index(name), name, pa.array(values, t.schema.field(name).type))

    cases = {
        "pickle": lambda t: t,  # replaced by pickle bytes below
        "extra": lambda t: t.append_column("x", pa.array([0] * t.num_rows)),
        "type": lambda t: t.set_column(t.column_names.index("value"), "value",
                                       t.column("value").cast(pa.float64())),
        "row": lambda t: col_set(t, "row", [99] * t.num_rows),
        "order": lambda t: col_set(t, "value", list(range(t.num_rows))),
        "box": lambda t: col_set(t, "bottom", [999] * t.num_rows),
        "layer": lambda t: col_set(t, "layer", ["nope"] * t.num_rows),
    }
    for name, change in cases.items():
        d = variant(name, change)
        if name == "pickle":
            import pickle

            (d / "top.parquet").write_bytes(pickle.dumps(pq.read_table(built.directory / "top.parquet").to_pydict()))
        with pytest.raises(InputError):
            vizlib.atlas.load(d)
    shutil.rmtree(tmp_path / "order")
    d = variant("huge", lambda t: t)
    with open(d / "top.parquet", "ab") as fh:
        fh.truncate(store.MAX_TOP_BYTES + 1)
    with pytest.raises(InputError, match="limit"):
        vizlib.atlas.load(d)


def test_stats_tables_are_validated(built, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(built.directory, d)
    first = sorted((d / "stats").iterdir())[0]
    first.write_bytes(b"PAR1garbagePAR1")
    atlas = vizlib.atlas.load(d)  # top-k still reads ...
    with pytest.raises(InputError):
        list(atlas.stats("conv2d_1"))  # ... but the broken stats file is refused
    with pytest.raises(InputError):  # and a rerun redoes that shard rather than trusting it
        store.read_shard(d, 0, [8, 7])


def test_crop_pictures_are_decoded_with_the_upload_caps(built, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "c"
    shutil.copytree(built.directory, d)
    t = pq.read_table(d / "crops.parquet")
    t = t.set_column(t.column_names.index("image"), t.schema.field("image"),
                     pa.array([b"%PDF-1.4 evil"] * t.num_rows, pa.binary()))
    pq.write_table(t, d / "crops.parquet", row_group_size=store.PICTURE_ROWS)
    atlas = vizlib.atlas.load(d)
    with pytest.raises(InputError, match="PDF"):
        atlas.crops("conv2d_1", 0)
