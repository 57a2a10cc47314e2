"""Small files that used to take the server down (issue #13), generated in several sizes per class.

Each case is either refused with :class:`InputError` and a message that says
what is wrong, or handled; a subprocess test measures the peak memory of the
worst cases of every class. Time is bounded by construction (structure caps
checked before decoding), so the tests assert the refusal, never a duration.
Generators: ``tests/hostile_corpus.py``; measured worst cases:
``benchmarks/README.md`` ("Hostile uploads").
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import hostile_corpus as hc
from vizlib.errors import InputError
from vizlib.export import MAX_MANIFEST_BYTES, bundle, is_bundle, read_bundle, read_manifest
from vizlib.images import images_from_zip, load_image
from vizlib.images import structure
from vizlib.links import from_dict

MB = 2**20


def refused(call, *words: str) -> str:
    """``call()`` raises InputError whose message holds every word (case-insensitive); the message."""
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    for word in words:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"
    assert not re.search(r"(?<![\d.])0(\.0)? [KMG]B", msg), msg  # small sizes are never "0 MB"
    return msg


def image_refused(data: bytes, *words: str) -> str:
    return refused(lambda: load_image(data, max_side=1024), *words)


# --------------------------------------------------------------------------- class 3: decoders that amplify


@pytest.mark.parametrize("extra, side", [(150, 64), (1000, 256), (10_000, 256)])
def test_jpeg_with_too_many_scans_refused(extra, side):
    image_refused(hc.progressive_jpeg_scans(extra, side), "more than 100 scans")


@pytest.mark.parametrize("extra, side", [(40, 6000), (90, 4000)])
def test_jpeg_whose_scans_pass_over_a_big_frame_too_often_refused(extra, side):
    image_refused(hc.progressive_jpeg_scans(extra, side), "scans pass over", "megapixels")


@pytest.mark.parametrize("extra, side", [(0, 256), (20, 256), (0, 2048)])
def test_ordinary_progressive_jpegs_decode(extra, side):
    img = load_image(hc.progressive_jpeg_scans(extra, side), max_side=1024)
    assert img.size == (min(side, 1024),) * 2


@pytest.mark.parametrize("n, marker", [(5_000, 0xE5), (100_000, 0xE5), (5_000, 0xFE)])
def test_jpeg_with_thousands_of_segments_refused(n, marker):
    image_refused(hc.jpeg_many_markers(n, marker), "JPEG segments")


@pytest.mark.parametrize("n", [70_000, 5 * MB])
def test_jpeg_with_megabytes_of_junk_between_segments_refused(n):
    image_refused(hc.jpeg_with_junk(n), "stray bytes")


def test_jpeg_with_a_few_segments_or_junk_bytes_decodes():
    assert load_image(hc.jpeg_many_markers(300)).size == (16, 12)
    assert load_image(hc.jpeg_with_junk(100)).size == (16, 12)


@pytest.mark.parametrize("n_tags, block", [(2000, 30_000), (1025, 100)])
def test_exif_directory_with_thousands_of_entries_refused(n_tags, block):
    image_refused(hc.exif_many_tags("JPEG", n_tags, block), "entries", "EXIF")


@pytest.mark.parametrize("n_tags, block", [(800, 30_000), (100, 60_000), (10, 60_000)])
def test_exif_tags_pointing_at_one_block_refused(n_tags, block):
    image_refused(hc.exif_many_tags("JPEG", n_tags, block), "point at the same data")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize("n_tags, block", [(3000, MB), (200, 4 * MB)])
def test_exif_bombs_in_png_and_webp_are_never_parsed_but_the_orientation_is_applied(fmt, n_tags, block):
    img = load_image(hc.exif_many_tags(fmt, n_tags, block, orientation=6), max_side=1024)
    assert img.size == (12, 16)  # 16 x 12 turned upright: orientation 6 read from IFD0 alone


@pytest.mark.parametrize("orientation, size", [(1, (16, 12)), (3, (16, 12)), (6, (12, 16)), (8, (12, 16))])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_ordinary_exif_orientation_is_applied(fmt, orientation, size):
    """Same pixels as Pillow's own ``exif_transpose`` (which is not used: it parses every tag)."""
    from PIL import ImageOps

    data = hc.exif_many_tags(fmt, 3, 16, orientation=orientation)
    img = load_image(data)
    assert img.size == size
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert np.array_equal(np.asarray(img), np.asarray(expected))


@pytest.mark.parametrize("n_tags, block", [(2000, 30_000), (300, 30_000)])
def test_multi_picture_directory_bombs_refused(n_tags, block):
    image_refused(hc.jpeg_mpf_many_tags(n_tags, block), "multi-picture")


def test_a_real_mpo_decodes_its_first_frame():
    img = load_image(hc.mpo_image())
    assert img.size == (16, 12) and np.asarray(img)[0, 0, 0] > 200  # red on the left: frame 0


@pytest.mark.parametrize("n_tags, block", [(100, MB), (1000, 64 * 1024), (30, 2 * MB)])
def test_tiff_tags_sharing_one_block_refused(n_tags, block):
    image_refused(hc.tiff_tags_sharing_one_block(n_tags, block), "point at the same data")


@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_tiff_exif_directory_with_too_many_numbers_refused(n):
    image_refused(hc.tiff_exif_values(n), "numbers")


@pytest.mark.parametrize("n", [1_000, 100_000, 2_000_000])
def test_tiff_with_more_strips_than_rows_refused(n):
    image_refused(hc.tiff_many_strips(n), "strips")


@pytest.mark.parametrize("n, width", [(300_000, 8)])
def test_tiff_with_more_strips_than_accepted_refused(n, width):
    image_refused(hc.tiff_many_strips(n, width=width, height=300_000), "strips")


@pytest.mark.parametrize("n", [8, 20])
def test_tiffs_with_their_own_strips_decode(n):
    assert load_image(hc.tiff_many_strips(n)).size == (8, 8)  # 8 one-row strips (+ a few spare)
    assert load_image(hc.tiff_exif_values(100)).size == (8, 8)


@pytest.mark.parametrize("n, piece", [(1_025, 1), (100_000, 1), (1_000_000, 1), (5_000, 255)])
def test_gif_comment_of_many_pieces_refused(n, piece):
    image_refused(hc.gif_comment_pieces(n, piece), "comment", "pieces")


@pytest.mark.parametrize("n", [70_000, 5_000_000])
def test_gif_with_a_flood_of_blocks_before_its_image_refused(n):
    image_refused(hc.gif_application_pieces(n), "blocks")


def test_gif_comments_of_ordinary_size_or_after_the_image_decode():
    assert load_image(hc.gif_comment_pieces(1_000, 255)).size == (4, 4)
    assert load_image(hc.gif_comment_pieces(1_000_000, 1, where="after")).size == (4, 4)  # never read
    assert load_image(hc.gif_application_pieces(1_000)).size == (4, 4)


@pytest.mark.parametrize("n, where", [(70_000, "before"), (1_000_000, "before"), (70_000, "idat")])
def test_png_of_too_many_chunks_refused(n, where):
    image_refused(hc.png_many_chunks(n, where=where), "chunks")


@pytest.mark.parametrize("n, where", [(1_000, "before"), (5_000, "idat")])
def test_png_of_many_but_not_absurdly_many_chunks_decodes(n, where):
    assert load_image(hc.png_many_chunks(n, where=where)).width >= 16


@pytest.mark.parametrize("width, height, deltas", [(40_000_000, 1, 1), (1_000_000, 40, 10)])
def test_bmp_too_wide_for_its_delta_codes_refused(width, height, deltas):
    image_refused(hc.bmp_rle_deltas(width, height, deltas), "sides longer than 65,535")


@pytest.mark.parametrize("n_bytes, rle4", [(5 * MB, False), (2 * MB, True)])
def test_bmp_with_a_long_rle_stream_refused(n_bytes, rle4):
    image_refused(hc.bmp_rle_stream(n_bytes, rle4), "RLE", "BMP")


@pytest.mark.parametrize("width, height, deltas, rle4", [(65_535, 600, 2000, False), (4000, 100, 100, True)])
def test_bmp_delta_codes_within_the_caps_decode(width, height, deltas, rle4):
    img = load_image(hc.bmp_rle_deltas(width, height, deltas, rle4), max_side=1024)
    assert max(img.size) <= 1024


def test_every_checked_kind_is_the_one_pillow_opens():
    """The structure check keys on the same magic numbers Pillow's plugins accept."""
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    samples = [hc.progressive_jpeg_scans(0), hc.small_png(), hc.gif_comment_pieces(1), hc.bmp_rle_runs(4, 4),
               hc.tiff_image(), hc.exif_many_tags("WEBP", 1, 8)]
    for data in samples:
        kind = structure.kind(data)
        assert Image.open(io.BytesIO(data)).format in (kind, "MPO")
    assert tuple(TiffImagePlugin.PREFIXES) == structure.TIFF_PREFIXES
    for prefix in structure.TIFF_PREFIXES:
        assert TiffImagePlugin._accept(prefix + b"\0" * 12)
    assert JpegImagePlugin._accept(b"\xff\xd8\xff") and PngImagePlugin._accept(b"\x89PNG\r\n\x1a\n")
    assert GifImagePlugin._accept(b"GIF89a") and BmpImagePlugin._accept(b"BM")
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    assert {t: s for t, (s, _) in ImageFileDirectory_v2._load_dispatch.items()} == structure.TIFF_TYPE_SIZES


# --------------------------------------------------------------------------- class 6: natural sort


@pytest.mark.parametrize("digits", [[5000], [4301, 4300, 5, 10_000], list(range(1, 60, 7)) + [5000, 4999]])
def test_zip_member_names_with_thousands_of_digits_sort(digits):
    out = images_from_zip(hc.zip_with_long_numbers(digits))
    lengths = [len(name) - len("img.png") for name, _ in out]
    assert lengths == sorted(lengths)  # by value: more nines is more


def test_natural_sort_is_by_value_with_leading_zeros_and_case():
    names = ["img10.png", "IMG2.png", "img002.png", "img1.png", "img0001.png", "a.png"]
    data = hc.zip_of((n, hc.small_png()) for n in names)
    got = [n for n, _ in images_from_zip(data)]
    assert got[0] == "a.png" and got[-1] == "img10.png"
    assert got.index("img1.png") < got.index("IMG2.png") and got.index("img0001.png") < got.index("img002.png")


@pytest.mark.parametrize("n", [20_000, 100_000])
def test_zip_listing_too_many_files_refused_before_its_directory_is_parsed(n):
    data = hc.zip_with_many_entries(n)
    refused(lambda: images_from_zip(data), f"{n:,} files")
    assert not is_bundle(data)


def test_hostile_image_inside_a_zip_is_refused_by_name():
    data = hc.zip_of([("ok.png", hc.small_png()), ("photos/evil.gif", hc.gif_comment_pieces(100_000))])
    refused(lambda: images_from_zip(data), '"photos/evil.gif" in the ZIP file', "comment")


# --------------------------------------------------------------------------- class 1: archives in archives


def bundle_with(npz: bytes | None = None, *, image: bytes | None = None, manifest=None, **kw) -> bytes:
    return hc.bundle_zip(hc.good_manifest() if manifest is None else manifest, image=image, npz=npz, **kw)


@pytest.mark.parametrize("shape, dtype", [((2**38,), "<f4"), ((2**20, 2**20), "<f8"), ((65536,) * 4, "|u1"),
                                          ((100_000, 100_000), "<f4")])
def test_npy_header_declaring_a_huge_array_refused_from_its_header(shape, dtype):
    data = bundle_with(hc.npz_declaring(shape, dtype))
    assert len(data) < 4096
    refused(lambda: read_bundle(data), "declares", "over the 256 MB limit")


@pytest.mark.parametrize("n_bytes", [300 * MB, 1024 * MB])
def test_npz_member_inflating_to_gigabytes_refused(n_bytes):
    data = bundle_with(hc.npz_zeros_streamed(n_bytes))
    assert len(data) < 4 * MB
    refused(lambda: read_bundle(data), "activations.npz")


@pytest.mark.parametrize("n_bytes", [20 * MB, 100 * MB])
def test_npz_member_compressed_like_a_bomb_refused(n_bytes):
    data = bundle_with(hc.npz_zeros_streamed(n_bytes))
    refused(lambda: read_bundle(data), "compressed suspiciously well")


@pytest.mark.parametrize("header, payload, words", [
    (((10,), "<f4"), 100, ["holds 100 bytes of data for an array that needs 40 bytes"]),
    (((10,), "<f4"), 0, ["holds 0 bytes", "corrupt"]),
    (((10,), "<f4"), 39, ["corrupt"]),
    (((3,), "|O"), 24, ["object values"]),
    (((3,), "<U4"), 48, ["<U4 values"]),
    (((3,), "V8"), 24, ["values"]),
])
def test_npy_members_that_lie_or_hold_no_numbers_refused(header, payload, words):
    shape, dtype = header
    npz = hc.zip_of([("layer.npy", hc.npy_header(shape, dtype) + b"\0" * payload)])
    refused(lambda: read_bundle(bundle_with(npz)), *words)


def test_npy_header_with_a_5000_digit_dimension_refused():
    npz = hc.zip_of([("layer.npy", b"\x93NUMPY\x01\x00" + b"\xff\x0f" + b"{'descr': '<f4', 'fortran_order': False, "
                     b"'shape': (" + b"9" * 3900 + b",), }" + b" " * 100 + b"\n")])
    refused(lambda: read_bundle(bundle_with(npz)), ".npy header")


def test_npz_with_thousands_of_members_refused():
    npz = hc.zip_of((f"a{i}.npy", hc.npy_header((1,)) + b"\0" * 4) for i in range(5000))
    refused(lambda: read_bundle(bundle_with(npz)), "5,000 files")


def test_arrays_read_back_exactly_including_fortran_order_and_many_dtypes():
    arrays = {"c": np.arange(12, dtype=np.float32).reshape(3, 4), "f": np.asfortranarray(np.ones((2, 3), np.int16)),
              "b": np.array([True, False]), "scalar": np.float64(3.5)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    back = read_bundle(bundle_with(buf.getvalue())).arrays
    for k, v in arrays.items():
        assert back[k].dtype == np.asarray(v).dtype and np.array_equal(back[k], v)


def test_arrays_skipped_when_the_page_does_not_need_them():
    b = read_bundle(bundle_with(hc.npz_declaring((2**38,))), arrays=False)
    assert b.arrays == {}


# --------------------------------------------------------------------------- class 2: bundled images


@pytest.mark.parametrize("side", [2048, 6324])
def test_bundled_image_is_decoded_with_the_upload_max_side(side):
    data = bundle_with(image=hc.big_flat("PNG", "L", side))
    assert len(data) < 100_000
    b = read_bundle(data)
    assert max(b.image.size) == 1024
    assert max(read_bundle(data, max_side=300).image.size) == 300


@pytest.mark.parametrize("make, words", [
    (lambda: hc.big_flat("PNG", "1", side=8000), ["megapixels"]),
    (lambda: hc.progressive_jpeg_scans(1000, 256), ["scans"]),
    (lambda: hc.gif_comment_pieces(100_000), ["comment"]),
    (lambda: b"\x00" * (21 * MB), ["over the 20 MB limit"]),
])
def test_bundled_image_gets_every_upload_check(make, words):
    refused(lambda: read_bundle(bundle_with(image=make(), compression=zipfile.ZIP_DEFLATED)), *words)


# --------------------------------------------------------------------------- class 6: manifests


def manifest_refused(manifest, *words: str) -> str:
    return refused(lambda: read_bundle(bundle_with(manifest=manifest)), *words)


@pytest.mark.parametrize("manifest, words", [
    ([1, 2, 3], ["not a dashboard view manifest"]),
    ("cnn-activation-view", ["not a dashboard view manifest"]),
    (hc.good_manifest(view=[["model", "vgg16"]]), ['"view"', "should be an object"]),
    (hc.good_manifest(view={"images": [1, 2]}), ['"view.images[0]"', "should be"]),
    (hc.good_manifest(view={"model": {"a": 1}}), ['"view.model"']),
    (hc.good_manifest(view={f"k{i}": "x" for i in range(500)}), ['"view"', "500 keys"]),
    (hc.good_manifest(view={"images": ["cat"] * 600}), ["600 items"]),
    (hc.good_manifest(model=5), ['"model"', "should be an object"]),
    (hc.good_manifest(model={"key": 5}), ['"model.key"', "should be text"]),
    (hc.good_manifest(image="image.png"), ['"image"', "should be an object"]),
    (hc.good_manifest(image={"member": ["image.png"]}), ['"image.member"']),
    (hc.good_manifest(image={"sha256": "x" * 5000}), ['"image.sha256"']),
    (hc.good_manifest(arrays={"names": []}), ['"arrays.names"']),
    (hc.good_manifest(layers={"conv1": "62x62"}), ['"layers.conv1"']),
    (hc.good_manifest(layers={"conv1": [1, -5]}), ['"layers.conv1[1]"', "out of range"]),
    (hc.good_manifest(version=True), ['"version"', "whole number"]),
    (hc.good_manifest(images={"a": "b"}), ['"images"']),
])
def test_manifests_of_the_wrong_shape_refused_naming_the_field(manifest, words):
    manifest_refused(manifest, "manifest.json", *words)


@pytest.mark.parametrize("raw, words", [
    (hc.deep_json(100_000), ["nests more than 16 levels"]),
    (hc.deep_json(40_000, "dict"), ["nests more than 16 levels"]),
    (b'{"format": "cnn-activation-view", "x": ' + hc.deep_json(17) + b"}", ["nests more than 16 levels"]),
    (b'{"format": "cnn-activation-view", "version": ' + b"7" * 5000 + b"}", ["5,000-digit number"]),
    (b'{"format": "cnn-activation-view", "view": {"n": -' + b"1" * 30 + b"}}", ["30-digit number"]),
    (b'{"format": "cnn-activation-view", "view": {"n": 1e' + b"9" * 400 + b"}}", ["number"]),
    (b'{"format": "cnn-activation-view", "view": {"n": NaN}}', ["NaN"]),
    (b'{"format": "cnn-activation-view", "format": "cnn-activation-view"}', ["twice"]),
    (b"\xff\xfe{}", ["UTF-8"]),
    (b"{", ["not valid JSON"]),
    (b'{"format": "cnn-activation-view", "pad": "' + b"x" * (300 * 1024) + b'"}', ["over the 256 KB limit"]),
])
def test_hostile_manifest_json_refused(raw, words):
    manifest_refused(raw, *words)


def test_manifest_size_message_uses_kb():
    raw = b'{"format": "cnn-activation-view", "pad": "' + b"x" * MAX_MANIFEST_BYTES + b'"}'
    msg = manifest_refused(raw, "256 KB")
    assert "MB" not in msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
view_values = st.dictionaries(
    st.sampled_from(["model", "weights", "image", "view", "layer", "channel", "n", "mode", "scale", "cmap", "images",
                     "cls", "opacity", "cell", "junk"]) | st.text(max_size=10),
    json_values | st.lists(st.text(max_size=12), max_size=5), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(view=view_values, extra=st.dictionaries(st.sampled_from(["model", "image", "arrays", "layers", "channels",
                                                                 "images", "versions", "version", "zzz"]),
                                                json_values, max_size=3))
def test_generated_manifests_are_refused_or_safe_for_from_dict(view, extra):
    """Whatever a manifest holds, read_manifest refuses it or from_dict can take its view."""
    raw = json.dumps({"format": "cnn-activation-view", "view": view, **extra}).encode()
    try:
        meta = read_manifest(raw)
    except InputError:
        return
    state, notices = from_dict(dict(meta.get("view") or {}))
    assert isinstance(notices, list)
    assert isinstance((meta.get("model") or {}).get("key", ""), str)
    assert isinstance((meta.get("image") or {}).get("member", "image.png"), str)


def test_a_real_bundle_still_reads_back(bundled):
    import vizlib
    from vizlib.export import manifest
    from vizlib.links import ViewState, as_dict

    img = vizlib.load_sample("astronaut_face")
    layers = [info.name for info in vizlib.spatial_layers(bundled)][:2]
    acts, _ = vizlib.forward(bundled, [img], layers)
    meta = manifest(model=bundled, view=as_dict(ViewState(images=("cat", "coins"))),
                    layers={k: v.shape[1:] for k, v in acts.items()}, channels={layers[0]: [0, 1, 2]},
                    image_name="face.png", images=[{"name": "face.png", "key": "sample:astronaut_face"}])
    data = bundle(image=img, image_name="face.png", manifest_data=meta, arrays={k: v[0] for k, v in acts.items()},
                  figures={"grid.png": hc.small_png()})
    back = read_bundle(data)
    assert back.image.size == img.size and set(back.arrays) == set(layers)
    assert all(np.array_equal(back.arrays[k], acts[k][0]) for k in layers)
    state, notices = from_dict(back.manifest["view"])
    assert state.images == ("cat", "coins")


# --------------------------------------------------------------------------- peak memory, measured


WORST_CASES = [
    # class 3, refused before decoding
    {"make": "progressive_jpeg_scans(10_000, 2048)", "action": "image", "expect": "refused"},
    {"make": "progressive_jpeg_scans(1000, 6000)", "action": "image", "expect": "refused"},
    {"make": "jpeg_many_markers(1_000_000)", "action": "image", "expect": "refused"},
    {"make": "exif_many_tags('JPEG', 1000, 50_000)", "action": "image", "expect": "refused"},
    {"make": "jpeg_mpf_many_tags(2000, 30_000)", "action": "image", "expect": "refused"},
    {"make": "tiff_tags_sharing_one_block(1000, 2**20)", "action": "image", "expect": "refused"},
    {"make": "tiff_many_strips(2_000_000)", "action": "image", "expect": "refused"},
    {"make": "gif_comment_pieces(5_000_000)", "action": "image", "expect": "refused"},
    {"make": "png_many_chunks(1_000_000)", "action": "image", "expect": "refused"},
    {"make": "bmp_rle_deltas(40_000_000, 1, 1)", "action": "image", "expect": "refused"},
    # class 3, handled: the most a file within the caps can cost
    {"make": "exif_many_tags('PNG', 3000, 2**20)", "action": "image", "expect": "handled"},
    {"make": "bmp_rle_deltas(65535, 600, 2000)", "action": "image", "expect": "handled"},
    {"make": "big_flat('PNG', 'RGBA')", "action": "image", "expect": "handled"},
    # classes 1, 2, 6: bundles and ZIPs
    {"make": "bundle_zip(good_manifest(), npz=npz_declaring((2**38,)))", "action": "bundle", "expect": "refused"},
    {"make": "bundle_zip(good_manifest(), npz=npz_zeros_streamed(1024 * 2**20))", "action": "bundle", "expect": "refused"},
    {"make": "bundle_zip(good_manifest(), image=big_flat('PNG', 'L'))", "action": "bundle", "expect": "handled"},
    {"make": "bundle_zip(deep_json(100_000))", "action": "bundle", "expect": "refused"},
    {"make": "zip_with_many_entries(200_000)", "action": "zip", "expect": "refused"},
    {"make": "zip_with_long_numbers([5000] * 50)", "action": "zip", "expect": "handled"},
]


def test_worst_cases_of_every_class_stay_small_in_a_fresh_process():
    results = hc.measure(WORST_CASES, timeout=600)
    report = "\n".join(f"{r['make']}: {r['outcome']} {r['peak_growth']} B {r['detail'][:80]}" for r in results)
    for r in results:
        assert r["outcome"] == r["expect"], report
        assert r["peak_growth"] is not None and r["peak_growth"] < 400 * MB, report
