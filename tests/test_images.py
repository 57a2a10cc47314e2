"""Tests for vizlib.images: a hostile-image corpus generated on the fly (no binary blobs).

Every case is either refused with InputError carrying a useful message, or
converted correctly (checked on actual pixel values); no other exception may
escape for bad input.
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image, ImageFile

import vizlib.images as vi
from vizlib.errors import InputError
from vizlib.images import (
    MAX_PIXELS,
    SAMPLES,
    Sample,
    file_digest,
    image_digest,
    images_from_zip,
    load_image,
    load_images,
    load_sample,
    model_view,
    sample_path,
    to_batch,
    to_rgb,
)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# --------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def refused(source, *words: str, **kw) -> InputError:
    """Assert load_image refuses ``source`` with InputError mentioning all ``words``."""
    with pytest.raises(InputError) as info:
        load_image(source, **kw)
    msg = str(info.value).lower()
    for word in words:
        assert word.lower() in msg, f"{word!r} not in {msg!r}"
    return info.value


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height 8-bit greyscale, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def load_calls(monkeypatch):
    """Record every ImageFile.load() call (i.e. every real decode)."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def recording_load(self):
        calls.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return calls


@pytest.fixture
def open_calls(monkeypatch):
    """Record every Image.open() call (one per file looked at)."""
    calls: list[int] = []
    original = Image.open

    def recording_open(fp, *args, **kwargs):
        calls.append(1)
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    return calls


@pytest.fixture(scope="session")
def png_81mp(tmp_path_factory) -> Path:
    """A real, valid 9000x9000 (81 MP) all-black 1-bit PNG: tiny on disk, huge decoded."""
    path = tmp_path_factory.mktemp("big") / "huge.png"
    Image.new("1", (9000, 9000)).save(path, "PNG", optimize=True)
    return path


@pytest.fixture(scope="session")
def gif_1000(tmp_path_factory) -> Path:
    """A 1000-frame animated GIF whose first frame is solid red."""
    palette = [v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)]
    palette[0:3] = RED
    frames = []
    for i in range(1000):
        frame = Image.new("P", (8, 8), 0 if i == 0 else 1 + i % 200)
        frame.putpalette(palette)
        frames.append(frame)
    path = tmp_path_factory.mktemp("gif") / "anim.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    return path


def solid(color=RED, size=(8, 6), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


# --------------------------------------------------------------------------- refusals


def test_empty_bytes_refused():
    refused(b"", "empty", name="blank.png")


def test_empty_file_refused(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    err = refused(path, "empty")
    assert "zero.jpg" in str(err)


def test_random_bytes_refused():
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    refused(data, "accepted format", "JPEG", "PNG", name="noise.bin")


def test_text_file_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just some text pretending to be an image\n" * 20)
    err = refused(path, "accepted format", "use a jpeg")
    assert '"notes.png"' in str(err)


def test_truncated_jpeg_refused():
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=90)
    refused(data[: len(data) // 2], "truncated", name="half.jpg")


def test_truncated_png_refused():
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    refused(data[: len(data) // 2], "corrupt", name="half.png")


@pytest.mark.parametrize("offset", [20, 40, 50], ids=["ihdr", "idat-type", "idat-data"])
def test_png_with_bad_crc_refused(offset):
    data = bytearray(encode(Image.effect_noise((32, 32), 60).convert("RGB")))
    data[offset] ^= 0xFF  # breaks the CRC of IHDR / the IDAT chunk type / IDAT data
    refused(bytes(data), "corrupt", name="crc.png")


def test_truncated_image_refused_even_if_someone_enabled_lenient_loading(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG")
    refused(data[: len(data) // 2], "truncated", name="half.jpg")


def test_png_header_declaring_400_megapixels_refused_without_allocating(load_calls):
    start = time.perf_counter()
    refused(fake_png_header(20000, 20000), "400 megapixels", "40 megapixels", name="bomb.png")
    assert load_calls == []
    assert time.perf_counter() - start < 1.0


def test_png_header_in_pillow_warning_range_refused(load_calls):
    # 100 MP: between Pillow's warning (~89 MP) and error (~179 MP) thresholds.
    refused(fake_png_header(10000, 10000), "megapixels", name="warn.png")
    assert load_calls == []


def test_real_81_megapixel_png_refused_by_pixel_cap_without_decoding(png_81mp, load_calls):
    assert png_81mp.stat().st_size < 200_000
    start = time.perf_counter()
    err = refused(png_81mp, "9000 x 9000", "81 megapixels", "40 megapixels")
    assert "huge.png" in str(err)
    assert load_calls == []
    assert time.perf_counter() - start < 1.0


def test_max_pixels_argument_is_respected():
    data = encode(solid(size=(100, 100)))
    refused(data, "100 x 100", max_pixels=5000)
    assert load_image(data, max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize(
    "payload, word",
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "svg"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "svg"),
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", "pdf"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "heic"),
    ],
    ids=["svg-xml", "svg", "pdf", "heic"],
)
def test_non_raster_formats_renamed_png_refused(tmp_path, payload, word):
    path = tmp_path / "innocent.png"
    path.write_bytes(payload)
    refused(path, word, "JPEG, PNG")


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
    b"0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)


def test_eps_renamed_png_refused_and_never_parsed(tmp_path, monkeypatch):
    opened: list[str] = []
    original_open = EpsImagePlugin.EpsImageFile._open

    def spy_open(self):
        opened.append("eps")
        return original_open(self)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: opened.append("gs"))
    # Sanity check that the spy has teeth: Pillow *would* route this to the EPS plugin.
    try:
        Image.open(io.BytesIO(EPS), formats=["EPS"])
    except Exception:
        pass
    assert opened == ["eps"]
    opened.clear()

    path = tmp_path / "drawing.png"
    path.write_bytes(EPS)
    refused(path, "eps", "JPEG, PNG")
    assert opened == []


def test_nonexistent_path_refused(tmp_path):
    err = refused(tmp_path / "missing.jpg", "not found")
    assert "missing.jpg" in str(err)


def test_directory_path_refused(tmp_path):
    refused(str(tmp_path), "not a file")


@pytest.mark.parametrize("form", ["path", "bytes", "filelike"])
def test_file_larger_than_cap_refused(tmp_path, monkeypatch, form):
    data = encode(Image.effect_noise((64, 64), 80).convert("RGB"))
    monkeypatch.setattr(vi.limits, "MAX_IMAGE_BYTES", len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    source = {"path": path, "bytes": data, "filelike": io.BytesIO(data)}[form]
    refused(source, "limit", name="big.png")
    monkeypatch.setattr(vi.limits, "MAX_IMAGE_BYTES", len(data))
    if form == "filelike":
        source = io.BytesIO(data)
    assert load_image(source).size == (64, 64)


def test_wrong_source_type_is_a_programming_error():
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- colour modes


def test_mode_1():
    img = Image.new("1", (4, 2), 0)
    img.putpixel((1, 0), 1)
    out = load_image(encode(img))
    px = pixels(out)
    assert tuple(px[0, 1]) == WHITE and tuple(px[0, 0]) == BLACK and tuple(px[1, 3]) == BLACK


def test_mode_L():
    img = Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8), "L")
    px = pixels(load_image(encode(img)))
    assert px[..., 0].tolist() == [[0, 100], [200, 255]]
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_mode_P_with_transparency_becomes_white():
    img = Image.new("P", (3, 1))
    img.putpalette(list(RED) + list(BLUE) + list(GREEN) + [0] * (256 * 3 - 9))
    for x, index in enumerate([0, 1, 2]):
        img.putpixel((x, 0), index)
    data = encode(img, transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    px = pixels(load_image(data))
    assert [tuple(p) for p in px[0]] == [WHITE, BLUE, GREEN]


def test_mode_LA_transparent_becomes_white():
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (0, 0))  # black, fully transparent
    img.putpixel((1, 0), (60, 255))  # opaque dark grey
    data = encode(img)
    assert Image.open(io.BytesIO(data)).mode == "LA"
    px = pixels(load_image(data))
    assert tuple(px[0, 0]) == WHITE and tuple(px[0, 1]) == (60, 60, 60)


def test_mode_RGBA_composited_over_white_not_black():
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (255, 0, 0, 0))  # transparent red -> white
    img.putpixel((1, 0), (0, 0, 255, 255))  # opaque blue stays blue
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    px = pixels(load_image(encode(img)))
    assert tuple(px[0, 0]) == WHITE
    assert tuple(px[0, 1]) == BLUE
    assert all(120 <= v <= 135 for v in px[0, 2])


def test_mode_I16_full_range_ramp_is_scaled_not_clipped():
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    data = encode(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    px = pixels(load_image(data))[..., 0].astype(int)
    assert px.min() == 0 and px.max() == 255
    assert len(np.unique(px)) == 256
    assert np.abs(px - np.rint(ramp / 257.0)).max() <= 1


def test_mode_I16_with_8_bit_values_unchanged_and_12_bit_reaches_white():
    small = np.array([[0, 7], [128, 255]], dtype=np.uint16)
    px = pixels(load_image(encode(Image.fromarray(small))))[..., 0]
    assert px.tolist() == [[0, 7], [128, 255]]
    twelve = np.array([[0, 4095], [2047, 1000]], dtype=np.uint16)
    px = pixels(load_image(encode(Image.fromarray(twelve))))[..., 0]
    assert px[0, 0] == 0 and px[0, 1] == 255 and 126 <= px[1, 0] <= 128


def test_mode_I16B_big_endian_tiff():
    img = Image.new("I;16B", (2, 1))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 65535)
    data = encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I;16B"
    px = pixels(load_image(data))[..., 0]
    assert px.tolist() == [[0, 255]]


def test_mode_I_32bit_stretched_by_min_max():
    arr = np.array([[-100, 410], [0, 156]], dtype=np.int32)
    data = encode(Image.fromarray(arr), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    px = pixels(load_image(data))[..., 0]
    assert px.tolist() == [[0, 255], [50, 128]]


def test_mode_I_32bit_within_8_bit_range_unchanged():
    arr = np.array([[3, 250], [0, 128]], dtype=np.int32)
    px = pixels(load_image(encode(Image.fromarray(arr), "TIFF")))[..., 0]
    assert px.tolist() == [[3, 250], [0, 128]]


def test_mode_F_stretched_by_min_max():
    arr = np.array([[-1.0, 0.0], [4.0, 2.0]], dtype=np.float32)
    data = encode(Image.fromarray(arr), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    px = pixels(load_image(data))[..., 0]
    assert px.tolist() == [[0, 51], [255, 153]]


def test_mode_F_with_nan_and_inf():
    arr = np.array([[np.nan, 0.0], [np.inf, 1.0], [-np.inf, 0.5]], dtype=np.float32)
    px = pixels(to_rgb(Image.fromarray(arr)))[..., 0]
    assert px.tolist() == [[0, 0], [255, 255], [0, 128]]
    all_nan = Image.fromarray(np.full((2, 2), np.nan, dtype=np.float32))
    assert pixels(to_rgb(all_nan)).max() == 0


def test_mode_CMYK_tiff():
    img = Image.new("CMYK", (3, 1))
    for x, value in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        img.putpixel((x, 0), value)
    data = encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    px = pixels(load_image(data))
    assert [tuple(p) for p in px[0]] == [WHITE, (0, 255, 255), BLACK]


def test_mode_CMYK_jpeg():
    img = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # magenta + yellow = red
    data = encode(img, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    px = pixels(load_image(data)).astype(int)
    assert np.abs(px - np.array(RED)).max() <= 8


def test_mode_LAB_tiff_goes_through_a_colour_transform():
    img = Image.new("LAB", (2, 1))
    img.putpixel((0, 0), (255, 128, 128))  # L*=100 -> white
    img.putpixel((1, 0), (0, 128, 128))  # L*=0 -> black
    data = encode(img, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    px = pixels(load_image(data)).astype(int)
    assert (px[0, 0] >= 250).all() and (px[0, 1] <= 5).all()


def test_modes_YCbCr_and_HSV():
    ycc = Image.new("YCbCr", (1, 1), (255, 128, 128))
    assert tuple(pixels(to_rgb(ycc))[0, 0]) == WHITE
    hsv = Image.new("HSV", (2, 1))
    hsv.putpixel((0, 0), (0, 255, 255))  # hue 0 -> red
    hsv.putpixel((1, 0), (85, 255, 255))  # hue 120 degrees -> green
    assert [tuple(p) for p in pixels(to_rgb(hsv))[0]] == [RED, GREEN]


def test_to_rgb_returns_a_new_image():
    img = solid()
    out = to_rgb(img)
    assert out is not img and out.tobytes() == img.tobytes()


# --------------------------------------------------------------------------- EXIF orientation

# Stored image: 4 wide x 2 high, blue with one red pixel at (x=0, y=0).
# Expected (x, y) of the red pixel after applying each EXIF orientation.
EXIF_EXPECTED = {1: (0, 0), 2: (3, 0), 3: (3, 1), 4: (0, 1), 5: (0, 0), 6: (1, 0), 7: (1, 3), 8: (0, 3)}


def oriented(fmt: str, orientation: int, size=(4, 2), block=1, **kw) -> bytes:
    img = Image.new("RGB", size, BLUE)
    img.paste(RED, (0, 0, block, block))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif, **kw)


def red_position(img: Image.Image) -> tuple[int, int]:
    ys, xs = np.nonzero((pixels(img) == RED).all(axis=-1))
    assert len(xs) == 1
    return int(xs[0]), int(ys[0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png(orientation):
    out = load_image(oriented("PNG", orientation))
    assert out.size == ((4, 2) if orientation <= 4 else (2, 4))
    assert red_position(out) == EXIF_EXPECTED[orientation]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_tiff(orientation):
    out = load_image(oriented("TIFF", orientation))
    assert out.size == ((4, 2) if orientation <= 4 else (2, 4))
    assert red_position(out) == EXIF_EXPECTED[orientation]


def test_exif_orientation_jpeg_like_a_phone_photo():
    # 64x32 with a 16x16 red block top-left, orientation 6 (rotate 90 clockwise).
    out = load_image(oriented("JPEG", 6, size=(64, 32), block=16, quality=95))
    assert out.size == (32, 64)
    px = pixels(out).astype(int)
    assert np.abs(px[8, 24] - RED).max() < 40  # block now at the top right
    assert np.abs(px[8, 8] - BLUE).max() < 40


def test_malformed_exif_is_ignored_not_fatal():
    exif = Image.Exif()
    exif[0x0112] = 77  # not a valid orientation
    out = load_image(encode(solid(size=(5, 3)), "PNG", exif=exif))
    assert out.size == (5, 3)


# --------------------------------------------------------------------------- animations


def test_1000_frame_gif_first_frame_only_and_fast(gif_1000):
    start = time.perf_counter()
    out = load_image(gif_1000)
    assert time.perf_counter() - start < 1.0
    assert out.size == (8, 8)
    assert (pixels(out) == RED).all()


def test_animated_png_and_webp_first_frame():
    frames = [solid(RED, (6, 6)), solid(GREEN, (6, 6)), solid(BLUE, (6, 6))]
    for fmt, kw in (("PNG", {}), ("WEBP", {"lossless": True})):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **kw)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        assert (pixels(load_image(data)) == RED).all(), fmt


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize(
    "fmt, kw, tol",
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 8),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 12),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("GIF", {}, 0),
    ],
    ids=["png", "jpeg", "webp-lossless", "webp-lossy", "bmp", "tiff", "tiff-lzw", "gif"],
)
def test_formats_happy_path(fmt, kw, tol):
    img = Image.new("RGB", (32, 16), BLUE)
    img.paste(RED, (0, 0, 16, 16))
    out = load_image(encode(img, fmt, **kw))
    assert out.mode == "RGB" and out.size == (32, 16)
    assert not isinstance(out, ImageFile.ImageFile)  # detached from any file
    px = pixels(out).astype(int)
    assert np.abs(px[8, 4] - RED).max() <= tol
    assert np.abs(px[8, 28] - BLUE).max() <= tol


class UploadLike:
    """Minimal read-only, non-seekable upload object with a name."""

    def __init__(self, data: bytes, name: str):
        self._buf = io.BytesIO(data)
        self.name = name

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)


@pytest.mark.parametrize("form", ["str", "Path", "bytes", "bytearray", "memoryview", "BytesIO", "BytesIO-read", "filelike", "open-file"])
def test_input_forms(tmp_path, form):
    data = encode(solid(GREEN, (7, 5)))
    path = tmp_path / "green.png"
    path.write_bytes(data)
    if form == "BytesIO-read":
        source = io.BytesIO(data)
        source.read()  # already consumed once (e.g. hashed): must still load
    elif form == "open-file":
        source = path.open("rb")
    else:
        source = {
            "str": str(path),
            "Path": path,
            "bytes": data,
            "bytearray": bytearray(data),
            "memoryview": memoryview(data),
            "BytesIO": io.BytesIO(data),
            "filelike": UploadLike(data, "green.png"),
        }[form]
    try:
        out = load_image(source)
    finally:
        if form == "open-file":
            source.close()
    assert out.size == (7, 5) and (pixels(out) == GREEN).all()


def test_error_names_file_from_filelike_name_attribute():
    err = refused(UploadLike(b"not an image at all", "uploads/holiday.jpg"), "accepted")
    assert '"holiday.jpg"' in str(err)
    err = refused(UploadLike(b"not an image at all", "x.jpg"), "accepted", name="Mine.jpg")
    assert '"Mine.jpg"' in str(err)


def test_big_jpeg_decodes_at_reduced_scale_to_the_one_side_everyone_uses():
    """One model view: a big JPEG decodes (DCT draft, then shrink) to UPLOAD_MAX_SIDE whoever asks,
    the same pixels every time, and never below that side even after an EXIF quarter turn."""
    from vizlib.images import UPLOAD_MAX_SIDE

    big = encode(Image.effect_noise((2400, 2200), 50).convert("RGB"), "JPEG", quality=80)
    out = load_image(big)
    assert out.size == (UPLOAD_MAX_SIDE, round(UPLOAD_MAX_SIDE * 2200 / 2400))
    assert pixels(out).tobytes() == pixels(load_image(io.BytesIO(big))).tobytes()  # same pixels from any source
    full = load_image(big, max_side=0)  # 0: no shrink and no draft
    assert full.size == (2400, 2200)
    full.thumbnail((UPLOAD_MAX_SIDE, UPLOAD_MAX_SIDE), Image.BILINEAR, reducing_gap=2.0)
    assert full.size == out.size
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(Image.new("RGB", (2400, 800), RED), "JPEG", exif=exif)
    assert load_image(rotated).size == (round(UPLOAD_MAX_SIDE * 800 / 2400), UPLOAD_MAX_SIDE)


# --------------------------------------------------------------------------- load_images


def test_load_images_keeps_names_and_order():
    items = [("b.png", encode(solid(RED))), ("a.jpg", encode(solid(GREEN), "JPEG")), ("c.gif", encode(solid(BLUE), "GIF"))]
    out = load_images(items)
    assert [n for n, _ in out] == ["b.png", "a.jpg", "c.gif"]
    assert all(im.mode == "RGB" for _, im in out)


def test_load_images_count_cap_checked_before_decoding(load_calls):
    data = encode(solid())
    with pytest.raises(InputError, match="limit is 2"):
        load_images([("a", data), ("b", data), ("c", data)], max_count=2)
    assert load_calls == []

    consumed: list[str] = []

    def generate():
        for name in "abcdef":
            consumed.append(name)
            yield name, data

    with pytest.raises(InputError, match="More than 2"):
        load_images(generate(), max_count=2)
    assert consumed == ["a", "b", "c"]  # stopped at the first image past the cap


def test_load_images_total_bytes_cap(open_calls):
    data = encode(Image.effect_noise((32, 32), 60).convert("RGB"))
    with pytest.raises(InputError) as info:
        load_images([("a", data), ("b", data), ("c", data)], max_total_bytes=2 * len(data) + 10)
    assert "add up to" in str(info.value) and '"c"' in str(info.value)
    assert len(open_calls) == 2  # c was never even opened


def test_load_images_bad_member_named():
    with pytest.raises(InputError, match='"broken.png"'):
        load_images([("ok.png", encode(solid())), ("broken.png", b"\x89PNG\r\n\x1a\nrubbish")])


# --------------------------------------------------------------------------- ZIP


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def test_zip_of_folder_skips_junk_and_sorts_naturally():
    data = make_zip(
        {
            "photos/": b"",
            "photos/img10.png": encode(solid(BLUE)),
            "photos/img2.PNG": encode(solid(GREEN)),
            "photos/img1.jpg": encode(solid(RED), "JPEG"),
            "photos/notes.txt": b"not an image",
            "photos/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "photos/._img1.jpg": b"resource fork",
            "__MACOSX/photos/._img10.png": b"resource fork",
            ".hidden/secret.png": encode(solid()),
        }
    )
    out = images_from_zip(data)
    assert [n for n, _ in out] == ["img1.jpg", "img2.PNG", "img10.png"]
    assert (pixels(out[1][1]) == GREEN).all()


def test_zip_from_file_like_and_path(tmp_path):
    data = make_zip({"a.png": encode(solid())})
    assert [n for n, _ in images_from_zip(io.BytesIO(data))] == ["a.png"]
    path = tmp_path / "set.zip"
    path.write_bytes(data)
    assert [n for n, _ in images_from_zip(path)] == ["a.png"]


def test_zip_bomb_refused(load_calls):
    zeros = b"\x00" * (50 * 2**20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("ok.png", encode(solid()))
        zf.writestr("bomb.png", zeros)
    with pytest.raises(InputError) as info:
        images_from_zip(buf.getvalue())
    msg = str(info.value)
    assert "zip bomb" in msg and "bomb.png" in msg
    assert load_calls == []


def test_zip_member_with_parent_path_is_read_by_basename_and_nothing_written(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = make_zip({"../evil.png": encode(solid(RED)), "/abs/evil2.png": encode(solid(BLUE))})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = images_from_zip(data)
    assert [n for n, _ in out] == ["evil.png", "evil2.png"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_zip_duplicate_basenames_get_unique_names():
    data = make_zip({"a/x.png": encode(solid(RED)), "b/x.png": encode(solid(BLUE)), "y.png": encode(solid())})
    names = [n for n, _ in images_from_zip(data)]
    assert sorted(names) == ["a/x.png", "b/x.png", "y.png"]


def test_zip_too_many_images_refused(load_calls):
    data = make_zip({f"{i}.png": encode(solid()) for i in range(4)})
    with pytest.raises(InputError, match="4 images; the limit is 3"):
        images_from_zip(data, max_count=3)
    assert load_calls == []


def test_zip_total_declared_size_refused(load_calls):
    img = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    data = make_zip({"a.png": img, "b.png": img})
    with pytest.raises(InputError, match="add up to"):
        images_from_zip(data, max_total_bytes=len(img) + 1)
    assert load_calls == []


def test_zip_member_over_per_image_cap_refused(monkeypatch):
    img = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    monkeypatch.setattr(vi.limits, "MAX_IMAGE_BYTES", len(img) - 1)
    with pytest.raises(InputError, match='"big.png" in the ZIP file is'):
        images_from_zip(make_zip({"big.png": img}, zipfile.ZIP_STORED))


@pytest.mark.parametrize(
    "data, word",
    [
        (b"", "empty"),
        (b"this is not a zip file at all" * 10, "not a valid zip"),
        (b"PK\x03\x04" + b"\x00" * 100, "not a valid zip"),
    ],
    ids=["empty", "text", "fake-header"],
)
def test_not_a_zip_refused(data, word):
    with pytest.raises(InputError) as info:
        images_from_zip(data)
    assert word in str(info.value).lower()


def test_zip_without_images_refused():
    with pytest.raises(InputError, match="contains no images"):
        images_from_zip(make_zip({"readme.txt": b"hello", "__MACOSX/._a.png": b"x"}))


def test_zip_with_undecodable_member_names_it():
    data = make_zip({"good.png": encode(solid()), "folder/bad.png": b"\x89PNG\r\n\x1a\n garbage"})
    with pytest.raises(InputError, match='"folder/bad.png" in the ZIP file'):
        images_from_zip(data)


def test_zip_with_corrupted_member_data_refused():
    img = encode(Image.effect_noise((64, 64), 60).convert("RGB"))
    data = bytearray(make_zip({"a.png": img}, zipfile.ZIP_STORED))
    offset = data.find(img)
    data[offset + len(img) // 2] ^= 0xFF  # bad CRC-32
    with pytest.raises(InputError, match='"a.png"'):
        images_from_zip(bytes(data))


# --------------------------------------------------------------------------- model input


def test_to_batch_rgb_shape_dtype_range():
    imgs = [solid(RED, (50, 30)), solid(BLUE, (10, 80))]
    batch = to_batch(imgs, (24, 32))
    assert batch.shape == (2, 24, 32, 3) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    assert batch.min() == 0.0 and batch.max() == 255.0
    assert (batch[0] == np.array(RED, np.float32)).all()
    assert (batch[1] == np.array(BLUE, np.float32)).all()


def test_to_batch_greyscale():
    batch = to_batch([solid(WHITE), solid(BLACK), Image.new("L", (9, 9), 77)], (5, 7), channels=1)
    assert batch.shape == (3, 5, 7, 1) and batch.dtype == np.float32
    assert (batch[0] == 255).all() and (batch[1] == 0).all() and (batch[2] == 77).all()


def test_to_batch_with_preprocess():
    seen = []

    def preprocess(x: np.ndarray) -> np.ndarray:
        seen.append((x.shape, x.dtype, float(x.max())))
        return x.astype(np.float64) / 127.5 - 1.0

    batch = to_batch([solid(WHITE), solid(BLACK)], (4, 4), preprocess=preprocess)
    assert seen == [((2, 4, 4, 3), np.float32, 255.0)]
    assert batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    assert batch[0].min() == 1.0 and batch[1].max() == -1.0


def test_to_batch_squashes_like_keras_load_img():
    img = Image.new("RGB", (40, 10), RED)
    img.paste(BLUE, (20, 0, 40, 10))  # left half red, right half blue
    batch = to_batch([img], (8, 8))
    assert (batch[0, :, 0] == RED).all() and (batch[0, :, 7] == BLUE).all()


def test_to_batch_refuses_bad_arguments():
    with pytest.raises(InputError, match="No images"):
        to_batch([], (8, 8))
    with pytest.raises(InputError, match="4-channel"):
        to_batch([solid()], (8, 8), channels=4)
    with pytest.raises(InputError, match="fixed"):
        to_batch([solid()], (None, None))  # type: ignore[arg-type]


def test_model_view():
    img = Image.new("RGBA", (40, 30), (255, 0, 0, 0))
    view = model_view(img, (10, 20), 3)
    assert view.size == (20, 10) and view.mode == "RGB" and (pixels(view) == WHITE).all()
    grey = model_view(solid(WHITE), (6, 6), 1)
    assert grey.mode == "L" and grey.size == (6, 6)
    same = solid(size=(6, 6))
    assert model_view(same, (6, 6), 3) is not same


# --------------------------------------------------------------------------- digests


def test_image_digest():
    a = solid(RED, (4, 4))
    b = Image.frombytes("RGB", (4, 4), a.tobytes())
    assert image_digest(a) == image_digest(b)
    c = a.copy()
    c.putpixel((3, 3), (254, 0, 0))
    assert image_digest(c) != image_digest(a)
    assert image_digest(solid(RED, (2, 8))) != image_digest(a)  # same bytes, other size
    assert image_digest(Image.new("L", (12, 4), 0)) != image_digest(Image.new("RGB", (4, 4), 0))
    assert len(image_digest(a)) == 64


def test_image_digest_same_for_same_pixels_from_different_formats():
    img = Image.effect_noise((16, 16), 60).convert("RGB")
    assert image_digest(load_image(encode(img, "PNG"))) == image_digest(load_image(encode(img, "BMP")))


def test_file_digest():
    assert file_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert file_digest(b"abc") != file_digest(b"abd")


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_exists_and_loads(name):
    sample = SAMPLES[name]
    assert isinstance(sample, Sample) and sample.name == name
    assert Path(sample.filename).stem == name
    assert sample.title and sample.source and sample.licence
    path = sample_path(name)
    assert path.is_file() and path.name == sample.filename
    img = load_sample(name)
    assert img.mode == "RGB" and min(img.size) >= 100


def test_samples_cover_the_folder():
    files = {p.name for p in vi.SAMPLES_DIR.iterdir() if not p.name.startswith(".")}
    assert files == {s.filename for s in SAMPLES.values()}


def test_sample_path_unknown_name():
    with pytest.raises(InputError) as info:
        sample_path("dog")
    assert '"dog"' in str(info.value) and "astronaut" in str(info.value) and "cat" in str(info.value)
    with pytest.raises(InputError):
        load_sample("../../etc/passwd")


def test_load_sample_returns_a_private_copy():
    first = load_sample("cat")
    first.paste((1, 2, 3), (0, 0, first.width, first.height))
    second = load_sample("cat")
    assert second.getpixel((0, 0)) != (1, 2, 3)


# --------------------------------------------------------------------------- fuzzing


def check_arbitrary(data: bytes) -> None:
    try:
        img = load_image(data, name="fuzz")
    except InputError as exc:
        assert str(exc)
    else:
        assert img.mode == "RGB" and img.width > 0 and img.height > 0
        img.tobytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data):
    check_arbitrary(data)


_MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"\xff\xd8\xff\xe1",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MAGICS), st.binary(max_size=2048))
def test_fuzz_bytes_behind_real_magic_numbers(magic, data):
    check_arbitrary(magic + data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_fuzz_single_byte_corruption_of_real_files(position, value):
    img = Image.new("RGB", (12, 10), BLUE)
    img.paste(RED, (0, 0, 6, 5))
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        data = bytearray(encode(img, fmt))
        data[position % len(data)] = value
        check_arbitrary(bytes(data))
    assert MAX_PIXELS == 40_000_000


def test_max_side_bounds_what_stays_in_memory(tmp_path):
    import io as _io
    import zipfile as _zipfile

    from PIL import Image as _Image

    from vizlib.images import images_from_zip, load_image

    big = _Image.new("RGB", (3000, 1500), (10, 200, 30))
    png, jpg = _io.BytesIO(), _io.BytesIO()
    big.save(png, format="PNG")
    big.save(jpg, format="JPEG")
    for data in (png.getvalue(), jpg.getvalue()):
        img = load_image(data, max_side=512)
        assert img.size == (512, 256) and img.mode == "RGB"
        assert abs(int(img.getpixel((100, 100))[1]) - 200) <= 3
    buf = _io.BytesIO()
    with _zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"flat{i}.png", png.getvalue())
    got = images_from_zip(buf.getvalue(), max_side=300)
    assert [im.size for _, im in got] == [(300, 150)] * 3
    small = load_image(png.getvalue(), max_side=5000)
    assert small.size == (3000, 1500)


def test_zip_of_small_files_declaring_huge_images_is_refused_before_decoding_them_all():
    import io as _io
    import zipfile as _zipfile

    from PIL import Image as _Image

    from vizlib.errors import InputError as _InputError
    from vizlib.images import images_from_zip

    flat = _io.BytesIO()
    _Image.new("L", (6000, 5000)).save(flat, format="PNG", optimize=True)  # 30 MP, a few kB
    assert len(flat.getvalue()) < 200_000
    buf = _io.BytesIO()
    with _zipfile.ZipFile(buf, "w") as zf:
        for i in range(20):
            zf.writestr(f"flat{i:02d}.png", flat.getvalue())
    with pytest.raises(_InputError, match="add up to more than"):
        images_from_zip(buf.getvalue(), max_total_pixels=100_000_000, max_side=256)
    assert len(images_from_zip(buf.getvalue(), max_total_pixels=700_000_000, max_side=64)) == 20
