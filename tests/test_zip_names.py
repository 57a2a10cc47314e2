"""ZIP members whose names are flagged UTF-8 but aren't (issue 18, class 7): named with replacement
characters and read, on every path that opens a ZIP (image uploads, dataset ZIPs of the atlas)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vizlib
import vizlib.atlas
from vizlib import archives
from vizlib.errors import InputError
from vizlib.images.zips import images_from_zip

ROOT = Path(__file__).resolve().parent.parent


def _png(size: tuple[int, int], value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def zip_with_raw_names(members: list[tuple[bytes, bytes]]) -> bytes:
    """A ZIP whose member names are the given raw bytes, each flagged UTF-8 (bit 11) whatever it holds:
    written with ASCII stand-ins of the same length, then patched in both headers."""
    buf = io.BytesIO()
    stand_ins = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, (raw, data) in enumerate(members):
            stand_in = (f"{i:0{len(raw) - 4}d}.png" if raw.endswith(b".png") else "x" * len(raw)).encode()
            assert len(stand_in) == len(raw)
            stand_ins.append((stand_in, raw))
            zf.writestr(stand_in.decode(), data)
    blob = bytearray(buf.getvalue())
    for stand_in, raw in stand_ins:
        for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
            start = 0
            while (pos := blob.find(sig, start)) >= 0:
                if blob[pos + name_at:pos + name_at + len(stand_in)] == stand_in:
                    blob[pos + name_at:pos + name_at + len(raw)] = raw
                    blob[pos + flag_at + 1] |= 0x08
                start = pos + 4
    return bytes(blob)


ODD = b"\xff\xfe.png"


def test_zipfile_itself_fails_on_such_a_name():
    """The case is real: Python's zipfile raises on the archive as a whole."""
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(io.BytesIO(zip_with_raw_names([(ODD, _png((8, 8), 10))])))


def test_the_one_reader_names_them_with_replacement_characters_and_reads_them():
    data = zip_with_raw_names([(ODD, _png((8, 8), 10)), (b"ok.png", _png((9, 9), 200)),
                               (b"\xff\xff.png", _png((7, 7), 90))])
    zf = archives.open_zip(data, label="The ZIP file", max_entries=10)
    names = sorted(i.filename for i in zf.infolist())
    assert names == sorted(["\ufffd\ufffd.png", "ok.png", "\ufffd\ufffd (2).png"]), names
    got = {i.filename: zf.read(i) for i in zf.infolist()}
    assert Image.open(io.BytesIO(got["\ufffd\ufffd.png"])).size == (8, 8)
    assert Image.open(io.BytesIO(got["\ufffd\ufffd (2).png"])).size == (7, 7)


def test_image_uploads_keep_every_image():
    data = zip_with_raw_names([(ODD, _png((8, 8), 10)), (b"ok.png", _png((9, 9), 200))])
    images = images_from_zip(data)
    assert sorted(name for name, _ in images) == sorted(["\ufffd\ufffd.png", "ok.png"])
    assert {im.size for _, im in images} == {(8, 8), (9, 9)}


def test_a_broken_zip_with_such_a_name_is_still_a_message():
    data = zip_with_raw_names([(ODD, _png((8, 8), 10))])
    with pytest.raises(InputError):
        archives.open_zip(data[: len(data) // 2], label="The ZIP file", max_entries=10)


def test_atlas_dataset_zip_library_and_cli(tmp_path):
    data = zip_with_raw_names([(ODD, _png((20, 16), 30)), (b"ok.png", _png((24, 24), 220))])
    src = tmp_path / "odd.zip"
    src.write_bytes(data)
    atlas = vizlib.atlas.build("emotion_cnn", src, tmp_path / "atlas", top=2)
    assert atlas.manifest["counts"]["decoded"] == 2
    paths = {r["path"] for r in atlas.top(atlas.layers[0], 0)}
    assert any("\ufffd" in p for p in paths), paths
    proc = subprocess.run([sys.executable, "-m", "vizlib.atlas", "build", "--model", "emotion_cnn", "--images",
                           str(src), "--out", str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
