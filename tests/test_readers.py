"""Issue #18 classes 3, 4, 8, 9, 10 (and #19's one ZIP reader, one JSON reader): hostile inputs on every entry.

Each class is fed to the library, the command line (``python -m vizlib.atlas``:
exit 2 and one line, no traceback) and, where the page takes it, the page
(AppTest: an ``st.error`` and the page keeps running). The hostile files are
built here from their formats' specifications, small on disk.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import vizlib  # noqa: F401  (before TensorFlow)
from vizlib import archives, schema
from vizlib.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def refused(call, *words: str) -> str:
    """``call()`` raises InputError (never anything else) whose message holds every word."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    for w in words:
        assert w.lower() in message.lower(), message
    return message


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vizlib.atlas", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def cli_refused(*args: str, words: tuple[str, ...] = ()) -> str:
    """The CLI exits 2 with one line on stderr that names the problem, and no traceback."""
    proc = run_cli(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _tf_noise(ln)]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _tf_noise(line: str) -> bool:
    """TensorFlow's own start-up chatter on stderr (not a message of ours)."""
    return line[:1] in "IWE" and line[1:5].isdigit() or "cpu_feature_guard" in line or "rebuild TensorFlow" in line \
        or line.startswith("To enable the following instructions")


# --------------------------------------------------------------------------- hostile ZIPs (class 3)


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_bad_crc(name: str = "a.png", payload: bytes = b"\x89PNG\r\n\x1a\n" + b"x" * 400) -> bytes:
    data = bytearray(zip_bytes({name: payload}, zipfile.ZIP_STORED))
    at = data.index(b"x" * 10)
    data[at] ^= 0xFF  # the data changes, the recorded CRC does not
    return bytes(data)


def zip_with_method(method: int, name: str = "a.png") -> bytes:
    """A ZIP whose only member claims compression ``method`` (99: AES, 12: bzip2, 14: LZMA, 9: deflate64)."""
    data = bytearray(zip_bytes({name: b"\x89PNG" + b"y" * 200}, zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.index(sig)
        data[at + off: at + off + 2] = struct.pack("<H", method)
    return bytes(data)


def zip_with_broken_deflate(name: str = "a.png") -> bytes:
    data = bytearray(zip_bytes({name: os.urandom(3000)}, zipfile.ZIP_DEFLATED))
    at = data.index(b"PK\x03\x04") + 30 + len(name)
    data[at: at + 40] = b"\xff" * 40  # not a deflate stream any more
    return bytes(data)


def zip_encrypted(name: str = "a.png") -> bytes:
    data = bytearray(zip_bytes({name: b"z" * 100}, zipfile.ZIP_STORED))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(sig)
        flags = struct.unpack("<H", data[at + off: at + off + 2])[0] | 0x1
        data[at + off: at + off + 2] = struct.pack("<H", flags)
    return bytes(data)


def zip_overlapping(n: int = 20, name: str = "img{}.png") -> bytes:
    """Many entries whose directory records all point at one member's data (an overlap bomb's skeleton)."""
    payload = zlib.compress(b"\0" * 2**20)[2:-4]
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, zlib.crc32(b"\0" * 2**20), len(payload),
                        2**20, len(name.format(0)), 0) + name.format(0).encode() + payload
    central = b""
    for i in range(n):
        nm = name.format(i).encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, zlib.crc32(b"\0" * 2**20),
                               len(payload), 2**20, len(nm), 0, 0, 0, 0, 0, 0) + nm
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(local), 0)
    return local + central + end


def zip_claiming_entries(n: int) -> bytes:
    """A ~100-byte file whose zip64 end record claims ``n`` entries."""
    body = b"PK\x03\x04" + bytes(100)
    z64 = len(body)
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, 50, 4)
    body += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64, 1)
    body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body


def zip_bomb(name: str = "top.parquet", n: int = 64 * 2**20, others: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for other, data in (others or {}).items():
            zf.writestr(other, data)
        with zf.open(name, "w", force_zip64=True) as w:
            chunk = b"\0" * 2**20
            for _ in range(n // 2**20):
                w.write(chunk)
    return buf.getvalue()


#: (id, maker(member name) -> bytes, words the message must hold): one of each kind of damaged or hostile ZIP.
#: "member" cases are refused only when the member is read; the others when the archive is opened.
HOSTILE_ZIPS = [
    ("bad-crc", "member", zip_with_bad_crc, ("could not be extracted", "crc")),
    ("broken-deflate", "member", zip_with_broken_deflate, ("could not be extracted",)),
    ("aes", "archive", lambda n: zip_with_method(99, n), ("compression method 99",)),
    ("bzip2", "archive", lambda n: zip_with_method(12, n), ("compression method 12",)),
    ("deflate64", "archive", lambda n: zip_with_method(9, n), ("compression method 9",)),
    ("encrypted", "archive", zip_encrypted, ("password",)),
    ("overlap", "archive", lambda n: zip_overlapping(name=n + "{}"), ("share their data",)),
    ("billion-entries", "archive", lambda n: zip_claiming_entries(10**9), ("1,000,000,000 files",)),
    ("truncated", "archive", lambda n: zip_bytes({n: os.urandom(5000)})[:3000], ("not a",)),
    ("not-a-zip", "archive", lambda n: b"PK\x03\x04" + bytes(300), ("not a",)),
]
ZIP_IDS = [c[0] for c in HOSTILE_ZIPS]


@pytest.mark.parametrize("case", HOSTILE_ZIPS, ids=ZIP_IDS)
def test_every_zip_reader_refuses_every_hostile_zip_with_input_error(case, tmp_path):
    """The page's image ZIPs, bundles, zipped atlases and .keras files: one policy, one kind of error."""
    from vizlib.atlas.store import extract_zip
    from vizlib.export import read_bundle
    from vizlib.images import images_from_zip
    from vizlib.modelcheck import check_model_file

    _, _, make, words = case
    refused(lambda: images_from_zip(make("a.png")), *words)
    refused(lambda: read_bundle(make("manifest.json")), *words)
    refused(lambda: extract_zip(make("manifest.json"), tmp_path / "atlas"), *words)
    assert not any(p.is_file() for p in (tmp_path / "atlas").rglob("*")) if (tmp_path / "atlas").exists() else True
    keras = tmp_path / "m.keras"
    keras.write_bytes(make("config.json"))
    refused(lambda: check_model_file(keras))  # its own words ("lacks metadata.json", ...): refused either way


def test_open_zip_counts_before_parsing_and_bounds_the_directory():
    data = zip_bytes({f"{i}.txt": b"" for i in range(50)}, zipfile.ZIP_STORED)
    refused(lambda: archives.open_zip(data, label="The ZIP", max_entries=49), "50 files", "limit is 49")
    refused(lambda: archives.open_zip(data, label="The ZIP", max_entries=100, max_directory_bytes=100),
            "of directory")
    with archives.open_zip(data, label="The ZIP", max_entries=50) as zf:
        assert len(zf.infolist()) == 50
    big = zip_bytes({"a": b"\0" * 5000, "b": b"\0" * 5000})
    refused(lambda: archives.open_zip(big, label="The ZIP", max_entries=9, max_total_bytes=9999), "add up to")


def test_member_reads_are_capped_whatever_the_directory_says(tmp_path):
    data = bytearray(zip_bytes({"a.bin": b"\1" * 10_000}, zipfile.ZIP_DEFLATED))
    # Make the directory (and the local header) claim 100 bytes: the read must stop at the cap.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig)
        data[at + off: at + off + 4] = struct.pack("<L", 100)
    with archives.open_zip(bytes(data), label="The ZIP", max_entries=9) as zf:
        info = zf.infolist()[0]
        # zipfile stops at the declared size and then finds the CRC wrong: refused, naming the member.
        refused(lambda: archives.read_member(zf, info, where="the ZIP", max_bytes=1000), '"a.bin"')
        refused(lambda: archives.copy_member(zf, info, tmp_path / "out.bin", where="the ZIP", max_bytes=1000),
                '"a.bin"')
    assert not (tmp_path / "out.bin").exists() and not list(tmp_path.iterdir())


def test_zipped_atlas_members_are_streamed_to_disk_and_bombs_refused(tmp_path):
    from vizlib.atlas.store import extract_zip

    refused(lambda: extract_zip(zip_bomb("top.parquet", others={"manifest.json": b"{}"}), tmp_path / "a"),
            "zip bombs")
    refused(lambda: extract_zip(zip_bomb("v1/manifest.json", 20 * 2**20), tmp_path / "b"))


def test_bundles_are_written_by_the_one_archive_module():
    from vizlib.export import bundle, read_bundle
    from PIL import Image

    data = bundle(image=Image.new("RGB", (8, 8), "red"), image_name="red.png",
                  manifest_data={"format": "cnn-activation-view", "version": 1},
                  arrays={"conv": np.arange(6, dtype=np.float32).reshape(1, 2, 3)})
    back = read_bundle(data)
    assert np.array_equal(back.arrays["conv"], np.arange(6, dtype=np.float32).reshape(1, 2, 3))


def test_zipfile_is_opened_in_one_module_only():
    hits = [str(p.relative_to(ROOT)) for p in list((ROOT / "vizlib").rglob("*.py")) + list((ROOT / "ui").rglob("*.py"))
            + [ROOT / "app.py"] if "zipfile.ZipFile(" in p.read_text(encoding="utf-8")]
    assert hits == ["vizlib/archives.py"], hits


# --------------------------------------------------------------------------- cache entries (class 8)


def npy_declaring(shape, dtype: str = "|u1", payload: bytes = b"") -> bytes:
    """A .npy file whose header declares ``shape`` (a tuple, or the text of one) of ``dtype``, then ``payload``."""
    shape_text = shape if isinstance(shape, str) else repr(tuple(shape))
    header = f"{{'descr': {dtype!r}, 'fortran_order': False, 'shape': {shape_text}, }}".encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


#: Damaged cache files: (id, bytes for the image entry of an 8x8x1 visualisation).
DAMAGED_ENTRIES = [
    ("declares-a-terabyte", npy_declaring((2**40,))),
    ("declares-1e18-elements", npy_declaring((10**9, 10**9))),
    ("wrong-shape", npy_declaring((4, 4, 1), payload=b"\0" * 16)),
    ("wrong-dtype", npy_declaring((8, 8, 1), "<f8", payload=b"\0" * 512)),
    ("truncated", npy_declaring((8, 8, 1), payload=b"\0" * 10)),
    ("trailing-bytes", npy_declaring((8, 8, 1), payload=b"\0" * 100)),
    ("pickled-object", npy_declaring((3,), "|O", payload=b"\0" * 24)),
    ("huge-header-length", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{"),
    ("3900-digit-dimension", npy_declaring("(" + "9" * 3900 + ",)")),
    ("empty", b""),
]


@pytest.mark.parametrize("raw", [d[1] for d in DAMAGED_ENTRIES], ids=[d[0] for d in DAMAGED_ENTRIES])
def test_a_damaged_cache_entry_is_dropped_not_allocated(tmp_path, raw):
    from vizlib.featvis import STATS, DiskCache

    cache = DiskCache(tmp_path, max_bytes=10**6)
    img = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    stats = np.ones((len(STATS), 4), np.float32)
    key = cache.key("m", "layer", 0)
    cache.put(key, img, stats)
    (tmp_path / f"{key}.img.npy").write_bytes(raw)
    assert cache.get(key, (8, 8, 1), 4) is None  # a miss, never a MemoryError
    assert cache.entries() == []  # ... and the entry is gone, so the next visit recomputes it
    cache.put(key, img, stats)
    got = cache.get(key, (8, 8, 1), 4)
    assert got is not None and np.array_equal(got[0], img)


def test_load_npy_checks_the_header_against_the_file(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(archives.load_npy(p, max_bytes=24), np.arange(6, dtype=np.float32).reshape(2, 3))
    refused(lambda: archives.load_npy(p, max_bytes=23), "over the")
    refused(lambda: archives.load_npy(p, max_bytes=24, shape=(3, 2)), "shape")
    p.write_bytes(npy_declaring((2**40,)))
    refused(lambda: archives.load_npy(p, max_bytes=2**50), "corrupt")


def test_feature_visualisation_recomputes_a_corrupted_cache_entry(tmp_path):
    """Through the real path: the entry of a channel is damaged on disk; the next visit recomputes and heals it."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        import vizlib
        from vizlib import featvis, models
        m = models.load_bundled_model()
        cache = featvis.DiskCache({str(tmp_path)!r}, max_bytes=10**8)
        run = lambda: featvis.render(m, "conv2d_1", [0, 1], steps=4, size=16, cache=cache)
        first = run()
        (key,) = [k for k, _, _ in cache.entries()][:1]
        import pathlib, struct
        p = pathlib.Path({str(tmp_path)!r}) / (key + ".img.npy")
        h = repr(dict(descr="|u1", fortran_order=False, shape=(2**40,))).encode()
        h += b" " * (63 - (10 + len(h)) % 64) + b"\\n"
        p.write_bytes(b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(h)) + h)
        second = run()
        third = run()
        print(json.dumps({{"first": first.cached, "second": second.cached, "third": third.cached,
                           "same": bool((second.images == first.images).all())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == [False, False]
    assert sorted(out["second"]) == [False, True]  # the damaged channel was recomputed, the other served
    assert out["third"] == [True, True]  # and the recomputed entry was stored again
    assert out["same"]  # seeded: the recomputed image is the one first computed


# --------------------------------------------------------------------------- JSON a user controls (class 4)


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory) -> Path:
    """A real atlas of the sample images (bundled model, first and last conv layer)."""
    import vizlib.atlas

    out = tmp_path_factory.mktemp("atlas") / "samples"
    vizlib.atlas.build("emotion_cnn", str(ROOT / "assets" / "samples"), str(out), top=3)
    return out


def _edited(m: dict, path: str, value) -> dict:
    m = json.loads(json.dumps(m))
    keys = path.split(".")
    node = m
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return m


def _raw_with(path: str, raw: str, base: dict) -> bytes:
    """The manifest with ``path`` replaced by the raw JSON text ``raw`` (which json.dumps could not write)."""
    marker = "__RAW_VALUE__"
    return json.dumps(_edited(base, path, marker)).replace(f'"{marker}"', raw).encode()


#: (id, edit(manifest dict) -> bytes, words): hostile manifests -- nesting, digits, size, types of fields.
HOSTILE_MANIFESTS = [
    ("deep-nesting", lambda m: _raw_with("images.source", "[" * 100_000 + "]" * 100_000, m), ("nested too deeply",)),
    ("deep-dicts", lambda m: _raw_with("runs", '{"a":' * 50_000 + "1" + "}" * 50_000, m), ("nested too deeply",)),
    ("5000-digit-top-k", lambda m: _raw_with("top_k", "9" * 5000, m), ("5,000-digit",)),
    ("5000-digit-exponent", lambda m: _raw_with("top_k", "1e" + "9" * 5000, m), ("number",)),
    ("nan", lambda m: _raw_with("runs.0.seconds", "NaN", m), ("NaN",)),
    ("duplicate-key", lambda m: json.dumps(m).replace('"top_k":', '"top_k": 1, "top_k":').encode(), ("twice",)),
    ("layers-a-string", lambda m: json.dumps(_edited(m, "layers", "conv")).encode(), ('"layers"', "list")),
    ("model-a-list", lambda m: json.dumps(_edited(m, "model", [1, 2])).encode(), ('"model"', "object")),
    ("tables-a-list", lambda m: json.dumps(_edited(m, "tables", [])).encode(), ('"tables"',)),
    ("table-rows-text", lambda m: json.dumps(_edited(m, "tables.top.rows", "75")).encode(), ("tables.top.rows",)),
    ("counts-text", lambda m: json.dumps(_edited(m, "counts", {"decoded": "many"})).encode(), ("counts.decoded",)),
    ("runs-seconds-text", lambda m: json.dumps(_edited(m, "runs.0.seconds", "5s")).encode(), ("seconds",)),
    ("failures-numbers", lambda m: json.dumps(_edited(m, "failures", [1, 2])).encode(), ("failures",)),
    ("featvis-a-list", lambda m: json.dumps(_edited(m, "featvis", [])).encode(), ('"featvis"',)),
    ("featvis-layers-list", lambda m: json.dumps(_edited(m, "featvis", {"layers": {"conv2d_1": []}})).encode(),
     ("featvis.layers.conv2d_1",)),
    ("layer-name-number", lambda m: json.dumps(_edited(m, "layers.0.name", 7)).encode(), ("layers[0].name",)),
    ("input-size-floats", lambda m: json.dumps(_edited(m, "model.input_size", [64.5, 64])).encode(),
     ("input_size",)),
    ("receptive-field-text", lambda m: json.dumps(_edited(m, "layers.0.receptive_field", "all")).encode(),
     ("receptive_field",)),
    ("top-level-list", lambda m: b"[1, 2, 3]", ("not a JSON object",)),
    ("not-utf8", lambda m: b"\xff\xfe{}", ("UTF-8",)),
    ("17-MB", lambda m: json.dumps(_edited(m, "images.source", "x" * (17 * 2**20))).encode(), ("over the",)),
]
MANIFEST_IDS = [c[0] for c in HOSTILE_MANIFESTS]


def _hostile_atlas(atlas_dir: Path, where: Path, edit) -> Path:
    import shutil

    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(atlas_dir, where)
    base = json.loads((atlas_dir / "manifest.json").read_text())
    (where / "manifest.json").write_bytes(edit(base))
    return where


@pytest.mark.parametrize("case", HOSTILE_MANIFESTS, ids=MANIFEST_IDS)
def test_hostile_atlas_manifests_are_refused_by_the_library(atlas_dir, tmp_path, case):
    import vizlib.atlas

    _, edit, words = case
    bad = _hostile_atlas(atlas_dir, tmp_path / "bad", edit)
    refused(lambda: vizlib.atlas.load(bad), *words)
    refused(lambda: vizlib.atlas.load("bad", root=tmp_path), *words)


def test_the_unedited_manifest_still_opens(atlas_dir):
    import vizlib.atlas

    assert vizlib.atlas.load(atlas_dir).top("conv2d_7", 0)


@pytest.mark.parametrize("case", [c for c in HOSTILE_MANIFESTS if c[0] in ("5000-digit-top-k", "featvis-layers-list")],
                         ids=["5000-digit-top-k", "featvis-layers-list"])
def test_hostile_atlas_manifests_are_refused_by_the_command_line(atlas_dir, tmp_path, case):
    _, edit, words = case
    bad = _hostile_atlas(atlas_dir, tmp_path / "bad", edit)
    cli_refused("featvis", "--out", str(bad), "--model", "emotion_cnn", words=words)


def test_hostile_manifest_refused_when_a_build_resumes_from_the_command_line(atlas_dir, tmp_path):
    bad = _hostile_atlas(atlas_dir, tmp_path / "bad", HOSTILE_MANIFESTS[0][1])
    cli_refused("build", "--model", "emotion_cnn", "--images", str(ROOT / "assets" / "samples"), "--out", str(bad),
                "--quiet", words=("nested too deeply",))


def test_model_configs_go_through_the_bounded_reader(tmp_path):
    from vizlib.modelcheck import check_model_file

    for raw, words in ((b'{"class_name": "Functional", "config": {"layers": [], "x": ' + b"9" * 5000 + b"}}",
                        ("5,000-digit",)),
                       (b'{"class_name": "Functional", "config": ' + b"[" * 300 + b"]" * 300 + b"}",
                        ("nested too deeply",))):
        p = tmp_path / "m.keras"
        p.write_bytes(zip_bytes({"metadata.json": b'{"keras_version": "3.0"}', "config.json": raw,
                                 "model.weights.h5": b"\x89HDF\r\n\x1a\n"}, zipfile.ZIP_STORED))
        refused(lambda: check_model_file(p), *words, "Upload")
    assert schema.parse_json(b'{"a": [1, 2.5, "x", null, true]}', what="x", max_bytes=100) == \
        {"a": [1, 2.5, "x", None, True]}


# --------------------------------------------------------------------------- the page (AppTest)


def _page_errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "the page showed no error"
    return " ".join(e.value for e in at.error)


@pytest.mark.parametrize("case", [c for c in HOSTILE_MANIFESTS if c[0] in ("deep-nesting", "5000-digit-top-k",
                                                                            "tables-a-list", "featvis-a-list")],
                         ids=["deep-nesting", "5000-digit-top-k", "tables-a-list", "featvis-a-list"])
def test_page_refuses_a_hostile_atlas_manifest_under_the_root(offline, atlas_dir, tmp_path, monkeypatch, case):
    from test_app import make_app

    _, edit, words = case
    _hostile_atlas(atlas_dir, tmp_path / "bad", edit)
    monkeypatch.setenv("CNN_VIZ_ATLAS_ROOT", str(tmp_path))
    at = make_app(view="atlas", atlas="bad").run()
    text = _page_errors(at)
    assert all(w.lower() in text.lower() for w in words), text
    assert str(tmp_path) not in text  # no server path reaches the visitor


def _zipped(directory: Path, manifest: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(directory.rglob("*")):
            if p.is_file():
                rel = p.relative_to(directory).as_posix()
                zf.writestr("atlas/" + rel, manifest if (rel == "manifest.json" and manifest is not None)
                            else p.read_bytes())
    return buf.getvalue()


def _upload_atlas(data: bytes):
    from test_app import make_app

    from ui.atlas import UPLOADED

    at = make_app(view="atlas").run()
    at.selectbox(key="atlas-name").set_value(UPLOADED).run()
    at.file_uploader(key="atlas-zip").set_value(("atlas.zip", data, "application/zip")).run()
    return at


@pytest.mark.parametrize("which", ["bad-crc", "aes", "overlap", "deep-nesting-manifest", "wrong-type-manifest"])
def test_page_refuses_a_hostile_zipped_atlas(offline, atlas_dir, tmp_path, monkeypatch, which):
    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(tmp_path / "cache"))
    cases = {c[0]: c for c in HOSTILE_ZIPS}
    manifests = {c[0]: c for c in HOSTILE_MANIFESTS}
    base = json.loads((atlas_dir / "manifest.json").read_text())
    if which == "deep-nesting-manifest":
        data, words = _zipped(atlas_dir, manifests["deep-nesting"][1](base)), ("nested too deeply",)
    elif which == "wrong-type-manifest":
        data, words = _zipped(atlas_dir, manifests["tables-a-list"][1](base)), ('"tables"',)
    else:
        data, words = cases[which][2]("manifest.json"), cases[which][3]
    at = _upload_atlas(data)
    text = _page_errors(at)
    assert all(w.lower() in text.lower() for w in words), text
    # The page keeps working: the next run has no exception either.
    at.run()
    assert not at.exception


@pytest.mark.parametrize("which", ["bad-crc", "broken-deflate", "aes", "encrypted", "billion-entries"])
def test_page_refuses_a_hostile_zip_of_images(offline, which):
    from test_app import make_app

    _, _, make, words = next(c for c in HOSTILE_ZIPS if c[0] == which)
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("folder.zip", make("a.png"), "application/zip")).run()
    text = _page_errors(at)
    assert all(w.lower() in text.lower() for w in words), text


# --------------------------------------------------------------------------- dataset ZIPs: library and command line


@pytest.mark.parametrize("which", ["aes", "overlap"])
def test_hostile_dataset_zips_are_refused_by_the_command_line(tmp_path, which):
    _, _, make, words = next(c for c in HOSTILE_ZIPS if c[0] == which)
    z = tmp_path / "images.zip"
    z.write_bytes(make("a.png"))
    cli_refused("build", "--model", "emotion_cnn", "--images", str(z), "--out", str(tmp_path / "out"), "--quiet",
                words=words)


def test_a_damaged_member_of_a_dataset_zip_is_skipped_with_its_reason(tmp_path):
    """Library: the damaged image is a recorded failure (never fatal), the others are in the atlas."""
    import vizlib.atlas
    from PIL import Image

    good = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(good, format="PNG")
    data = bytearray(zip_bytes({"good.png": good.getvalue(), "bad.png": b"\x89PNG\r\n\x1a\n" + b"x" * 400},
                               zipfile.ZIP_STORED))
    at = data.index(b"x" * 10)
    data[at] ^= 0xFF
    z = tmp_path / "images.zip"
    z.write_bytes(bytes(data))
    atlas = vizlib.atlas.build("emotion_cnn", str(z), str(tmp_path / "out"), top=1)
    failures = atlas.manifest["failures"]
    assert [f["path"] for f in failures] == ["bad.png"] and "crc" in failures[0]["error"].lower(), failures
    assert atlas.manifest["counts"]["decoded"] == 1


# --------------------------------------------------------------------------- models Keras cannot load (class 9)


def _deep_keras(tmp_path: Path, n: int) -> Path:
    import hostile_corpus as hc

    p = tmp_path / f"deep{n}.keras"
    p.write_bytes(hc.keras_archive(hc.deep_functional(n)))
    return p


def test_load_depth_follows_keras_graph_walk():
    """The depth Keras recurses to, not the number of layers: a chain is as deep as it is long."""
    import hostile_corpus as hc
    from vizlib.modelcheck.audit import load_depth

    assert load_depth(hc.deep_functional(10)) == 11  # ten ReLUs after the input
    assert load_depth(hc.deep_functional(1999)) == 2000
    assert load_depth(hc.long_sequential(140)) == 141
    assert load_depth(hc.nested_sequentials(100, 50)) == 100  # each nested model is rebuilt on its own


@pytest.mark.parametrize("n", [850, 1999])
def test_a_chain_too_deep_for_keras_is_refused_in_the_users_terms(tmp_path, n):
    from vizlib.modelcheck import MAX_MODEL_DEPTH, check_model_file

    assert n > MAX_MODEL_DEPTH
    msg = refused(lambda: check_model_file(_deep_keras(tmp_path, n)), f"chains {n + 1:,} layers", "Rebuild")
    assert "recursion" not in msg.lower()


def test_a_chain_keras_can_load_is_accepted(tmp_path):
    from vizlib.modelcheck import check_model_file

    assert check_model_file(_deep_keras(tmp_path, 700)).n_layers == 701


def test_keras_running_out_of_stack_is_said_in_the_users_terms(tmp_path):
    """Past the vetting (check=False), Keras itself fails on a 1,100-layer chain: the message is ours, not Python's."""
    from vizlib.models import load_model_file

    msg = refused(lambda: load_model_file(_deep_keras(tmp_path, 1100), check=False), "layers one after another",
                  "Rebuild")
    assert "maximum recursion depth" not in msg


def test_a_too_deep_model_is_refused_by_the_command_line(tmp_path):
    cli_refused("build", "--model", str(_deep_keras(tmp_path, 900)), "--images", str(ROOT / "assets" / "samples"),
                "--out", str(tmp_path / "out"), "--quiet", words=("chains 901 layers",))


@pytest.mark.parametrize("key, value", [("strides", [100_000, 1]), ("pool_size", 5000), ("dilation_rate", [1, 10**6])])
def test_absurd_strides_windows_and_dilations_are_refused(tmp_path, key, value):
    import hostile_corpus as hc
    from vizlib.modelcheck import MAX_WINDOW, check_model_file
    from vizlib.receptive import MAX_WINDOW as RF_MAX_WINDOW

    assert MAX_WINDOW == RF_MAX_WINDOW  # one bound for the vetting and the receptive-field arithmetic
    layer = {"module": "keras.layers", "class_name": "MaxPooling2D" if key == "pool_size" else "Conv2D",
             "registered_name": None, "name": "odd",
             "config": {"name": "odd", "trainable": True, "dtype": "float32", key: value,
                        **({"filters": 2, "kernel_size": [3, 3]} if key != "pool_size" else {})},
             "inbound_nodes": []}
    config = hc.deep_functional(1)
    config["config"]["layers"].append(layer)
    p = tmp_path / "odd.keras"
    p.write_bytes(hc.keras_archive(config))
    refused(lambda: check_model_file(p), key, f"{MAX_WINDOW:,}")


def test_page_refuses_a_too_deep_uploaded_model(offline, tmp_path):
    from test_app import make_app

    at = make_app().run()
    at.selectbox(key="model").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("deep.keras", _deep_keras(tmp_path, 900).read_bytes(),
                                                  "application/octet-stream")).run()
    text = _page_errors(at)
    assert "chains 901 layers" in text and "Rebuild" in text, text


# --------------------------------------------------------------------------- arguments of the wrong type (class 10)


def _public_functions() -> list[tuple[str, object]]:
    import inspect

    import vizlib.atlas
    import vizlib.export
    import vizlib.links

    out = [(f"vizlib.{n}", getattr(vizlib, n)) for n in vizlib.__all__]
    for mod in (vizlib.links, vizlib.export, vizlib.atlas):
        out += [(f"{mod.__name__}.{n}", v) for n, v in vars(mod).items()
                if not n.startswith("_") and inspect.isfunction(v)
                and (getattr(inspect.unwrap(v), "__module__", "").startswith(mod.__name__) or mod is vizlib.atlas)]
    # Only functions with a required argument can be given one of the wrong type.
    return [(n, f) for n, f in out if inspect.isfunction(f) and any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in inspect.signature(f).parameters.values())]

JUNK = None  # built lazily: hypothesis strategies


def _junk():
    from hypothesis import strategies as st

    return st.one_of(st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(), st.binary(max_size=8),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                     st.lists(st.integers(), max_size=3), st.sets(st.integers(), max_size=2),
                     st.builds(object), st.complex_numbers())


@pytest.mark.parametrize("name, fn", _public_functions(), ids=[n for n, _ in _public_functions()])
def test_public_functions_given_wrong_types_raise_input_error(name, fn):
    """Every required argument gets a value of the wrong kind: InputError (or a result), never another error."""
    import inspect

    from hypothesis import HealthCheck, given, settings, strategies as st

    required = [p for p in inspect.signature(fn).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert required  # _public_functions keeps only these

    from vizlib.arguments import fits, hints

    known = hints(fn)
    # A value of the wrong type for each argument (an argument whose hint cannot be judged gets any junk).
    strategies = [_junk().filter(lambda v, h=known.get(p.name): fits(v, h) is not True) for p in required]

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(st.tuples(*strategies))
    def run(values):
        try:
            fn(*values)
        except InputError:
            pass

    run()


def test_the_argument_checker_names_the_argument_and_keeps_signatures():
    import inspect

    import vizlib.links as links

    refused(lambda: links.to_query({"model": "vgg16"}), "'state'", "ViewState")
    refused(lambda: links.from_query(["model=vgg16"]), "'params'", "dict")
    refused(lambda: vizlib.activations(5, [], ["conv"]), "'model'")
    refused(lambda: vizlib.load_image(12), "'source'")
    refused(lambda: vizlib.find_layer("emotion_cnn", 3), "'name'", "text")
    assert links.from_query({"model": "vgg16", "channel": 7})[0].channel == 7  # numbers in a dict still parse
    assert list(inspect.signature(vizlib.activations).parameters)[:3] == ["model", "images", "layers"]
    assert vizlib.find_layer("emotion_cnn", "conv2d_1").name == "conv2d_1"
