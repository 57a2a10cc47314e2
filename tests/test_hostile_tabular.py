"""Hostile tables, folders and stored pictures for the dataset atlas (issue #18, classes 1, 2, 5, 6, 7).

Every file is generated here, tiny on disk: a Parquet file of 300 million null
rows, a dictionary page repeated by every row, a zstd page or Arrow batch that
inflates far past its bytes, a folder with a symlink loop and links out of it, a
file name that is not UTF-8, an atlas whose stored crops are 36-megapixel PNGs.
Each is refused with :class:`InputError` (the CLI: exit 2, one line) or handled,
on the library, the command line and the page. Peak memory of the worst cases:
``benchmarks/bench_hostile_tabular.py`` (a child process, also checked here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hostile_corpus as hc
import vizlib.atlas
from vizlib import tables
from vizlib.atlas import sources
from vizlib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MB = 2**20


# --------------------------------------------------------------------------- generators


def nulls_parquet(path: Path, rows: int = 300_000_000, *, statistics: bool = True) -> Path:
    """An image column of ``rows`` nulls (RLE: ~0.5 MB on disk for 300 million rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk = pa.nulls(min(rows, 10_000_000), pa.binary())
    with pq.ParquetWriter(path, pa.schema([("image", pa.binary())]), write_statistics=statistics) as w:
        left = rows
        while left > 0:
            w.write_table(pa.table({"image": chunk.slice(0, min(left, len(chunk)))}))
            left -= len(chunk)
    return path


def repeated_dictionary_parquet(path: Path, rows: int = 200_000, value_bytes: int = MB) -> Path:
    """Every row points at one dictionary value of ``value_bytes`` (read plainly: rows x value_bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    value = hc.small_png() + b"\0" * value_bytes
    arr = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([value], pa.binary()))
    # No Arrow schema stored: readers see a plain binary column whose pages happen to be dictionary-encoded.
    pq.write_table(pa.table({"image": arr}), path, row_group_size=rows, compression="zstd", store_schema=False)
    return path


def zstd_bomb_parquet(path: Path, n_bytes: int = 8 * MB) -> Path:
    """One row whose image is ``n_bytes`` of zeros, zstd-compressed to almost nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": pa.array([b"\0" * n_bytes], pa.binary())}), path, compression="zstd",
                   use_dictionary=False)
    return path


def _varint(v: int, length: int = 0) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    while len(out) < length:  # a longer (non-canonical) encoding of the same value
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def lying_footer_parquet(path: Path, n_bytes: int = 8 * MB, claim: int = 1000) -> Path:
    """A zstd page of ``n_bytes`` whose footer declares its column chunk and row group ``claim`` bytes."""
    import struct

    import pyarrow.parquet as pq

    zstd_bomb_parquet(path, n_bytes)
    real = pq.ParquetFile(path).metadata.row_group(0).column(0).total_uncompressed_size
    data = bytearray(path.read_bytes())
    (flen,) = struct.unpack("<i", data[-8:-4])
    start = len(data) - 8 - flen
    needle = _varint(2 * real)  # thrift compact i64: zigzag varint
    footer = bytes(data[start:start + flen])
    assert footer.count(needle) == 2  # the column chunk's and the row group's sizes
    data[start:start + flen] = footer.replace(needle, _varint(2 * claim, len(needle)))
    path.write_bytes(bytes(data))
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).total_uncompressed_size == claim
    return path


def compressed_arrow(path: Path, n_bytes: int = 8 * MB) -> Path:
    import pyarrow as pa
    import pyarrow.feather as feather

    feather.write_feather(pa.table({"image": pa.array([b"\0" * n_bytes], pa.large_binary())}), path,
                          compression="zstd")
    return path


def linked_folder(root: Path) -> Path:
    """A folder with one image, a symlink loop, a link to a folder outside and a link to a file outside."""
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.png").write_bytes(hc.small_png())
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(hc.small_png((20, 20)))
    os.symlink(folder, folder / "sub" / "loop")          # a loop
    os.symlink(outside, folder / "out")                  # a folder outside
    os.symlink(outside / "secret.png", folder / "s.png")  # a file outside
    os.symlink("/etc", folder / "etc")
    return folder


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vizlib.atlas", "build", "--model", "emotion_cnn", "--quiet", *args],
                          env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def one_line_refusal(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- class 2: declared row counts


def test_300_million_null_rows_are_refused_from_the_metadata(tmp_path):
    path = nulls_parquet(tmp_path / "nulls.parquet")
    assert path.stat().st_size < 2 * MB
    with pytest.raises(InputError, match="No images"):  # all null by the statistics: nothing to list
        sources.list_source(path)


def test_null_rows_without_statistics_are_counted_and_capped(tmp_path):
    path = nulls_parquet(tmp_path / "nulls.parquet", statistics=False)
    with pytest.raises(InputError, match="more than 1,000,000 images"):
        sources.list_source(path)
    small = nulls_parquet(tmp_path / "few.parquet", rows=50_000, statistics=False)
    with pytest.raises(InputError, match="bytes an image"):  # 50,000 rows in a few bytes: nothing to read per row
        sources.list_source(small)


def test_a_cap_smaller_than_the_table_refuses_before_listing(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [hc.small_png((10 + i, 10)) for i in range(30)]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="more than 10 images"):
        sources.list_source(tmp_path / "t.parquet", max_images=10)
    assert len(sources.list_source(tmp_path / "t.parquet", max_images=30)) == 30


# --------------------------------------------------------------------------- class 1: decoded before sized


def test_a_dictionary_value_repeated_by_every_row_is_refused(tmp_path):
    path = repeated_dictionary_parquet(tmp_path / "dict.parquet")
    assert path.stat().st_size < 2 * MB
    with pytest.raises(InputError, match="repeat"):
        sources.list_source(path)


def test_a_zstd_page_bigger_than_allowed_is_refused_before_decoding(tmp_path, monkeypatch):
    path = zstd_bomb_parquet(tmp_path / "bomb.parquet")
    assert path.stat().st_size < 64 * 1024
    monkeypatch.setattr(sources, "MAX_ROW_GROUP_BYTES", 4 * MB)
    with pytest.raises(InputError, match="limit"):
        sources.list_source(path)
    monkeypatch.setattr(tables, "MAX_PAGE_BYTES", 4 * MB)  # the page header is checked too
    with pytest.raises(InputError, match="page"):
        tables.open_table(path, "parquet", columns=["image"])


def test_a_footer_that_understates_its_pages_is_refused_before_decoding(tmp_path):
    path = lying_footer_parquet(tmp_path / "liar.parquet")
    with pytest.raises(InputError, match="pages hold more"):
        sources.list_source(path)


def test_no_single_page_of_an_image_column_may_exceed_one_image(tmp_path):
    path = zstd_bomb_parquet(tmp_path / "big.parquet", 48 * MB)  # 48 MB in one page, under the row-group cap
    with pytest.raises(InputError, match="page"):
        sources.list_source(path)


def test_an_ordinary_table_with_a_big_dictionary_page_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pyarrow's defaults put the first write batch's values in one dictionary page: 45 MB here.
    rng = np.random.default_rng(0)
    blobs = [rng.bytes(100_000) for _ in range(450)]
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), tmp_path / "t.parquet")
    listing = sources.list_source(tmp_path / "t.parquet")
    assert len(listing) == 450 and sources.read_bytes(listing.ref, 449, listing.names[449]) == blobs[449]


def test_all_null_row_groups_are_skipped_and_rows_keep_their_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [hc.small_png((10 + i, 10)) for i in range(5)]
    with pq.ParquetWriter(tmp_path / "t.parquet", pa.schema([("image", pa.binary())])) as w:
        w.write_table(pa.table({"image": pa.nulls(1000, pa.binary())}))
        w.write_table(pa.table({"image": pa.array(images, pa.binary())}))
    listing = sources.list_source(tmp_path / "t.parquet")
    assert listing.names == [str(1000 + i) for i in range(5)]
    for i, name in enumerate(listing.names):
        assert sources.read_bytes(listing.ref, i, name) == images[i]


def test_a_compressed_arrow_batch_is_sized_from_its_buffers_before_reading(tmp_path, monkeypatch):
    path = compressed_arrow(tmp_path / "bomb.arrow")
    assert path.stat().st_size < 64 * 1024
    r = tables.open_table(path, "arrow", columns=["image"])
    assert r.groups[0].nbytes >= 8 * MB  # the declared uncompressed length, not the file's bytes
    r.close()
    monkeypatch.setattr(sources, "MAX_ROW_GROUP_BYTES", 4 * MB)
    with pytest.raises(InputError, match="record batch"):
        sources.list_source(path)


def test_an_uncompressed_arrow_batch_is_read_in_place_and_bad_offsets_are_refused(tmp_path, monkeypatch):
    import struct

    import pyarrow as pa
    import pyarrow.feather as feather

    blobs = [bytes([65 + i]) * 1000 for i in range(3)] + [b"\0" * (6 * MB)]
    feather.write_feather(pa.table({"image": pa.array(blobs, pa.binary())}), tmp_path / "plain.arrow",
                          compression="uncompressed")
    monkeypatch.setattr(sources, "MAX_ROW_GROUP_BYTES", 4 * MB)  # the batch is 6 MB, mapped: nothing allocated
    listing = sources.list_source(tmp_path / "plain.arrow")
    assert sources.read_bytes(listing.ref, 1, listing.names[1]) == blobs[1]
    data = (tmp_path / "plain.arrow").read_bytes()
    offsets = struct.pack("<5i", 0, 1000, 2000, 3000, 3000 + 6 * MB)
    assert data.count(offsets) == 1
    (tmp_path / "bad.arrow").write_bytes(data.replace(offsets, struct.pack("<5i", 0, 1000, 2000, 2**30, 2**31 - 1)))
    with pytest.raises(InputError, match="could not be read"):
        sources.ItemReader(sources.list_source(tmp_path / "bad.arrow").ref).read(0, "0")


def test_damaged_footers_are_refused(tmp_path):
    good = zstd_bomb_parquet(tmp_path / "g.parquet", 1000)
    data = bytearray(good.read_bytes())
    data[-8:-4] = (2**31 - 1).to_bytes(4, "little")  # a footer longer than the file
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    with pytest.raises(InputError, match="footer"):
        sources.list_source(tmp_path / "bad.parquet")
    arrow = bytearray(compressed_arrow(tmp_path / "a.arrow", 1000).read_bytes())
    arrow[-10:-6] = (2**31 - 1).to_bytes(4, "little")
    (tmp_path / "bad.arrow").write_bytes(bytes(arrow))
    with pytest.raises(InputError, match="footer"):
        sources.list_source(tmp_path / "bad.arrow")


def test_one_picture_is_fetched_without_decoding_its_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = [bytes([i]) * 100_000 for i in range(64)]
    pq.write_table(pa.table({"image": pa.array(blobs, pa.binary())}), tmp_path / "p.parquet", row_group_size=64,
                   use_dictionary=False)
    reader = tables.open_table(tmp_path / "p.parquet", "parquet", columns=["image"], batch_bytes=250_000)
    seen = []
    real = reader._parquet.iter_batches

    def counting(*a, **k):
        for b in real(*a, **k):
            seen.append(b.num_rows)
            yield b

    reader._parquet.iter_batches = counting
    assert reader.row_values(3, "image").as_py() == blobs[3]
    assert max(seen) <= 2 and sum(seen) <= 4, seen  # two batches of two rows, not the 64-row group
    reader.close()


# --------------------------------------------------------------------------- class 6: every kind of path


@pytest.mark.parametrize("as_uri", [False, True])
def test_links_out_of_the_folder_and_loops_are_not_followed(tmp_path, as_uri):
    folder = linked_folder(tmp_path)
    location = folder.as_uri() if as_uri else str(folder)
    listing = sources.list_source(location)
    assert listing.names == ["sub/a.png"]
    assert sources.read_bytes(listing.ref, 0, "sub/a.png") == hc.small_png()


def test_a_link_swapped_in_after_listing_is_not_read(tmp_path):
    folder = linked_folder(tmp_path)
    listing = sources.list_source(folder.as_uri())
    os.unlink(folder / "sub" / "a.png")
    os.symlink(tmp_path / "outside" / "secret.png", folder / "sub" / "a.png")
    with pytest.raises(InputError, match="outside"):
        sources.ItemReader(listing.ref).read(0, "sub/a.png")


def test_deep_folders_and_many_files_are_bounded(tmp_path):
    deep = tmp_path / "deep"
    p = deep
    for i in range(40):
        p = p / "d"
    p.mkdir(parents=True)
    (p / "x.png").write_bytes(hc.small_png())
    (deep / "y.png").write_bytes(hc.small_png())
    assert sources.list_source(deep).names == ["y.png"]  # the 40th level is below MAX_DEPTH
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):
        (many / f"{i}.png").write_bytes(hc.small_png())
    with pytest.raises(InputError, match="more than 10 images"):
        sources.list_source(many, max_images=10)


# --------------------------------------------------------------------------- class 7: names that are not UTF-8


def test_file_names_that_are_not_utf8_are_shown_with_replacement_characters(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"\xff\xfe.png"), "wb") as fh:
        fh.write(hc.small_png())
    with open(os.path.join(os.fsencode(folder), b"\xfe\xff.png"), "wb") as fh:
        fh.write(hc.small_png((10, 10)))
    (folder / "ok.png").write_bytes(hc.small_png())
    listing = sources.list_source(folder)
    assert sorted(listing.names) == sorted(["\ufffd\ufffd.png", "\ufffd\ufffd.png (2)", "ok.png"])
    for i, name in enumerate(listing.names):
        assert sources.read_bytes(listing.ref, i, name).startswith(b"\x89PNG")
    atlas = vizlib.atlas.build("emotion_cnn", folder, tmp_path / "atlas", top=2)
    assert atlas.manifest["counts"] == {"images": 3, "decoded": 3, "failed": 0}
    paths = {r["path"] for r in atlas.top(atlas.layers[0], 0)}
    assert paths <= set(listing.names)
    assert atlas.image(next(iter(paths))).size[0] > 0


def test_zip_member_names_that_are_not_utf8_build(tmp_path):
    import zipfile

    path = tmp_path / "odd.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("x.png")
        info.filename = "x.png"
        zf.writestr(info, hc.small_png())
    raw = path.read_bytes().replace(b"x.png", b"\xff.png")  # a name that is not UTF-8 (no UTF-8 flag: cp437)
    path.write_bytes(raw)
    listing = sources.list_source(path)
    assert len(listing) == 1 and listing.names[0].endswith(".png")
    assert sources.read_bytes(listing.ref, 0, listing.names[0]) == hc.small_png()


# --------------------------------------------------------------------------- class 5: stored pictures


@pytest.fixture(scope="module")
def small_atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-atlases")
    vizlib.atlas.build("emotion_cnn", str(REPO / "assets" / "samples"), str(root / "good"), top=5)
    return root


def _replace_pictures(directory: Path, column: str, table: str, blob: bytes) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(directory / table)
    i = t.schema.get_field_index(column)
    t = t.set_column(i, t.schema.field(column), pa.array([blob] * t.num_rows, pa.binary()))
    pq.write_table(t, directory / table, row_group_size=4)


def bomb_atlas(root: Path) -> Path:
    """The good atlas with every stored crop and view replaced by a 6000 x 6000 flat PNG (36 MP, 50 KB)."""
    bad = root / "bomb"
    if not bad.exists():
        shutil.copytree(root / "good", bad)
        big = hc.big_flat_png(6000)
        _replace_pictures(bad, "image", "crops.parquet", big)
        _replace_pictures(bad, "view", "thumbs.parquet", big)
    return bad


def test_stored_pictures_are_decoded_within_a_pixel_budget(small_atlas):
    good = vizlib.atlas.load(small_atlas / "good")
    layer = good.layers[-1]
    assert all(c is not None and max(c.size) <= 128 for c in good.crops(layer, 0))
    atlas = vizlib.atlas.load(bomb_atlas(small_atlas))
    with pytest.raises(InputError, match="megapixels"):
        atlas.crops(layer, 0)
    with pytest.raises(InputError, match="megapixels"):
        atlas.view(good.top(layer, 0)[0]["path"])


def test_a_top_table_longer_than_its_manifest_allows_is_refused_unread(small_atlas, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "long"
    shutil.copytree(small_atlas / "good", bad)
    t = pq.read_table(bad / "top.parquet")
    pq.write_table(pa.concat_tables([t] * 50), bad / "top.parquet")
    with pytest.raises(InputError, match="rows"):
        vizlib.atlas.load(bad)


def _variant(root: Path, name: str, edit) -> None:
    target = root / name
    if not target.exists():
        shutil.copytree(root / "good", target)
        edit(target)


def _long_top(d: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(d / "top.parquet")
    pq.write_table(pa.concat_tables([t] * 50), d / "top.parquet")


def _crops_linked_out(d: Path) -> None:
    outside = d.parent.parent / f"{d.parent.name}-outside.parquet"
    shutil.copy(d / "crops.parquet", outside)
    (d / "crops.parquet").unlink()
    os.symlink(outside, d / "crops.parquet")


@pytest.mark.parametrize("name, edit, words", [("longtop", _long_top, "rows"),
                                               ("linked", _crops_linked_out, "regular file")])
def test_the_page_refuses_hostile_atlas_tables_with_a_message(offline, small_atlas, monkeypatch, name, edit, words):
    from test_app import make_app

    _variant(small_atlas, name, edit)
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(small_atlas))
    at = make_app(view="atlas", atlas=name, layer="conv2d_7", channel="3").run(timeout=120)
    assert not at.exception, at.exception
    assert any(words in e.value for e in at.error), [e.value for e in at.error]


def test_a_loop_of_links_in_the_atlas_root_is_refused(offline, small_atlas, monkeypatch):
    from test_app import make_app

    if not (small_atlas / "loop").is_symlink():
        os.symlink(small_atlas / "loop", small_atlas / "loop")
    with pytest.raises(InputError, match="loop"):
        vizlib.atlas.load("loop", root=small_atlas)
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(small_atlas))
    at = make_app(view="atlas", atlas="loop", layer="conv2d_7", channel="3").run(timeout=120)
    assert not at.exception, at.exception


def test_the_page_shows_an_atlas_of_names_that_are_not_utf8(offline, small_atlas, monkeypatch, tmp_path):
    from test_app import assert_clean, make_app, titles

    folder = tmp_path / "odd"
    folder.mkdir()
    for raw, size in ((b"\xff\xfe.png", (16, 12)), (b"ok.png", (20, 20))):
        with open(os.path.join(os.fsencode(folder), raw), "wb") as fh:
            fh.write(hc.small_png(size))
    if not (small_atlas / "odd").exists():
        vizlib.atlas.build("emotion_cnn", folder, small_atlas / "odd", top=2)
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(small_atlas))
    at = make_app(view="atlas", atlas="odd", layer="conv2d_7", channel="3").run(timeout=120)
    assert_clean(at)
    assert any("the 2 of 2 images" in t for t in titles(at)), titles(at)


def test_the_page_shows_a_pixel_bomb_atlas_as_a_message(offline, small_atlas, monkeypatch):
    from test_app import make_app

    bomb_atlas(small_atlas)
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(small_atlas))
    at = make_app(view="atlas", atlas="bomb", layer="conv2d_7", channel="3").run(timeout=120)
    assert not at.exception, at.exception
    assert any("megapixels" in e.value for e in at.error), [e.value for e in at.error]


# --------------------------------------------------------------------------- the command line and memory


def test_cli_refuses_hostile_tables_in_one_line(tmp_path):
    nulls = nulls_parquet(tmp_path / "nulls.parquet", statistics=False)
    one_line_refusal(cli("--images", str(nulls), "--out", str(tmp_path / "o1")), "more than 1,000,000 images")
    rep = repeated_dictionary_parquet(tmp_path / "dict.parquet")
    one_line_refusal(cli("--images", str(rep), "--out", str(tmp_path / "o2")), "repeat")


def test_cli_builds_a_folder_with_links_and_odd_names(tmp_path):
    folder = linked_folder(tmp_path)
    with open(os.path.join(os.fsencode(folder), b"\xff\xfe.png"), "wb") as fh:
        fh.write(hc.small_png())
    r = cli("--images", folder.as_uri(), "--out", str(tmp_path / "atlas"), "--top", "2")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "atlas" / "manifest.json").read_text())
    assert manifest["counts"]["images"] == 2  # sub/a.png and the odd name; nothing from outside


_CHILD = """
import sys, json
sys.path[:0] = [{repo!r}]
from vizlib.atlas import sources
from vizlib.errors import InputError

def hwm():  # the kernel's peak RSS of this process (ru_maxrss after fork/exec can report the parent's)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))

import pyarrow.parquet
base = hwm()
try:
    sources.list_source({path!r})
    outcome = "listed"
except InputError as exc:
    outcome = "refused"
print(json.dumps({{"outcome": outcome, "growth": hwm() - base}}))
"""


def test_listing_the_worst_tables_stays_small_in_a_child(tmp_path):
    for path in (nulls_parquet(tmp_path / "nulls.parquet"), nulls_parquet(tmp_path / "n2.parquet", statistics=False),
                 repeated_dictionary_parquet(tmp_path / "dict.parquet")):
        r = subprocess.run([sys.executable, "-c", _CHILD.format(repo=str(REPO), path=str(path))],
                           capture_output=True, text=True, timeout=300)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        # Growth of the peak over the imports (TensorFlow comes with vizlib): the old reader took GBs here.
        assert out["outcome"] == "refused" and out["growth"] < 300 * MB, (path.name, out)
