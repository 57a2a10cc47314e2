"""Hostile uploads (issue #13): worst time and peak memory per class, before and after.

    python benchmarks/bench_hostile_uploads.py                       # this tree (~3 min)
    python benchmarks/bench_hostile_uploads.py --baseline DIR        # and an old checkout, e.g.
        mkdir -p ../before && git archive fd6c05e | tar -x -C ../before                  #   the tree before the fix
    python benchmarks/bench_hostile_uploads.py --quick               # fewer sizes per class

Every case is a file built by ``tests/hostile_corpus.py`` (several sizes per
class), handed to what the server does with that kind of upload
(``load_image(max_side=1024)``, ``images_from_zip(max_side=512)``,
``read_bundle``, ``check_model_file``) in its **own fresh interpreter**, under a
6 GiB address-space cap (a runaway case fails instead of taking the machine)
and a wall-clock timeout (``--timeout``, default 60 s). Peak memory is the
growth of the kernel's high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the call) over the RSS before it.

A second part loads the largest model shapes the model check accepts (a
150-layer Sequential, two nested 100-layer Sequentials, a 700-layer
functional chain; a 2,000-layer one is refused by the depth check) with ``keras.models.load_model`` to show what the caps leave.
Results: ``benchmarks/out/hostile_uploads.json``; summary in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, save

sys.path.insert(0, str(ROOT / "tests"))
import hostile_corpus as hc  # noqa: E402

MB = 2**20

#: class -> [(expression over hostile_corpus, action)], several sizes each.
CLASSES: dict[str, list[tuple[str, str]]] = {
    "1 archives in archives (bundle .npz)": [
        ("bundle_zip(good_manifest(), npz=npz_declaring((2**38,)))", "bundle"),
        ("bundle_zip(good_manifest(), npz=npz_declaring((2**20, 2**20), '<f8'))", "bundle"),
        ("bundle_zip(good_manifest(), npz=npz_zeros_streamed(300 * 2**20))", "bundle"),
        ("bundle_zip(good_manifest(), npz=npz_zeros_streamed(1024 * 2**20))", "bundle"),
        ("bundle_zip(good_manifest(), npz=npz_zeros_streamed(3800 * 2**20))", "bundle"),
    ],
    "2 bundled images (max_side, pixel cap)": [
        ("bundle_zip(good_manifest(), image=big_flat('PNG', 'L', 2048))", "bundle"),
        ("bundle_zip(good_manifest(), image=big_flat('PNG', 'L', 6324))", "bundle"),
        ("bundle_zip(good_manifest(), image=big_flat('PNG', 'RGBA', 6324))", "bundle"),
        ("bundle_zip(good_manifest(), image=big_flat('PNG', '1', 9000))", "bundle"),
    ],
    "3a JPEG scans": [
        ("progressive_jpeg_scans(100, 6000)", "image"),
        ("progressive_jpeg_scans(1000, 6000)", "image"),
        ("progressive_jpeg_scans(1000, 2048)", "image"),
        ("progressive_jpeg_scans(10000, 2048)", "image"),
        ("progressive_jpeg_scans(200000, 256)", "image"),
    ],
    "3b JPEG segments and junk": [
        ("jpeg_many_markers(100_000)", "image"),
        ("jpeg_many_markers(1_000_000)", "image"),
        ("jpeg_with_junk(5 * 2**20)", "image"),
        ("jpeg_with_junk(19 * 2**20)", "image"),
    ],
    "3c EXIF / MPF tag tables": [
        ("exif_many_tags('JPEG', 2000, 30_000)", "image"),
        ("exif_many_tags('JPEG', 800, 50_000)", "image"),
        ("jpeg_mpf_many_tags(2000, 30_000)", "image"),
        ("exif_many_tags('PNG', 3000, 2**20)", "image"),
        ("exif_many_tags('WEBP', 3000, 2**20)", "image"),
        ("exif_many_tags('PNG', 300, 8 * 2**20)", "image"),
    ],
    "3d TIFF tag tables": [
        ("tiff_tags_sharing_one_block(100, 2**20)", "image"),
        ("tiff_tags_sharing_one_block(1000, 2**20)", "image"),
        ("tiff_tags_sharing_one_block(5000, 2**20)", "image"),
        ("tiff_exif_values(1_000_000)", "image"),
    ],
    "3e TIFF strips": [
        ("tiff_many_strips(100_000)", "image"),
        ("tiff_many_strips(1_000_000)", "image"),
        ("tiff_many_strips(2_500_000)", "image"),
    ],
    "3f GIF comment pieces and blocks": [
        ("gif_comment_pieces(100_000)", "image"),
        ("gif_comment_pieces(1_000_000)", "image"),
        ("gif_comment_pieces(10_000_000)", "image"),
        ("gif_application_pieces(5_000_000)", "image"),
    ],
    "3g PNG chunks": [
        ("png_many_chunks(100_000)", "image"),
        ("png_many_chunks(1_000_000)", "image"),
        ("png_many_chunks(1_500_000, where='idat')", "image"),
    ],
    "3h BMP RLE": [
        ("bmp_rle_deltas(40_000_000, 1, 1)", "image"),
        ("bmp_rle_deltas(160_000, 250, 2000)", "image"),
        ("bmp_rle_deltas(65535, 600, 2000)", "image"),
        ("bmp_rle_stream(19 * 2**20)", "image"),
        ("bmp_rle_stream(19 * 2**20, rle4=True)", "image"),
    ],
    "3z accepted images at the caps (40 MP)": [
        ("big_flat('PNG', 'RGBA')", "image"),
        ("big_flat('PNG', 'I;16')", "image"),
        ("big_flat('WEBP', 'RGBA', lossless=True)", "image"),
        ("big_flat('TIFF', 'F', compression='tiff_adobe_deflate')", "image"),
        ("big_flat('JPEG', 'RGB', progressive=True)", "image"),
        ("progressive_jpeg_scans(20, 6324)", "image"),
        ("bmp_rle_stream(4 * 2**20 - 4096)", "image"),
        ("bmp_rle_stream(2**20 - 4096, rle4=True)", "image"),
    ],
    "5 model structure (check only)": [
        ("keras_archive(long_sequential(950))", "model"),
        ("keras_archive(nested_sequentials(950, 950))", "model"),
        ("keras_archive(deep_functional(5_000))", "model"),
        ("keras_archive(deep_functional(20_000))", "model"),
        ("keras_archive(deep_functional(50_000))", "model"),
    ],
    "6 manifests and ZIP names": [
        ("bundle_zip(deep_json(100_000))", "bundle"),
        ("bundle_zip(b'{\"format\": \"cnn-activation-view\", \"version\": ' + b'7' * 5000 + b'}')", "bundle"),
        ("bundle_zip(good_manifest(view=[1, 2]))", "bundle"),
        ("bundle_zip(good_manifest(model={'key': 5}))", "bundle"),
        ("zip_with_long_numbers([5000] * 50)", "zip"),
        ("zip_with_many_entries(500_000)", "zip"),
    ],
}

QUICK = {k: v[:2] for k, v in CLASSES.items()}

#: Largest model shapes the check accepts, loaded with Keras (time to load).
MODEL_LOADS = [
    ("long_sequential(150)", "Sequential of 150 layers (the cap)"),
    ("nested_sequentials(100, 100)", "two nested Sequentials of 100"),
    ("deep_functional(700)", "functional chain of 700 layers (under the 800-deep load cap)"),
    ("deep_functional(2000)", "functional chain of 2,000 layers (refused now: Keras would recurse too deep)"),
    ("long_sequential(400)", "Sequential of 400 layers (refused now)"),
]


def run(classes: dict, python_path: str, timeout: float) -> list[dict]:
    cases = [{"class": name, "make": make, "action": action} for name, items in classes.items()
             for make, action in items]
    out = []
    for case in cases:
        t = time.perf_counter()
        (r,) = hc.measure([case], timeout=timeout, python_path=python_path, separate=True)
        r["wall"] = time.perf_counter() - t
        out.append(r)
        grow = "-" if r["peak_growth"] is None else f"{r['peak_growth'] / MB:7.0f} MB"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:7.2f} s"
        size = "-" if r["file_bytes"] is None else f"{r['file_bytes']:>10,} B"
        print(f"  {r['make'][:62]:62} {size:>14} {r['outcome']:9} {secs:>10} {grow:>11}  {r['detail'][:70]}",
              flush=True)
    return out


def model_loads(timeout: float) -> list[dict]:
    out = []
    for make, what in MODEL_LOADS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.keras"
            path.write_bytes(hc.keras_archive(eval(make, vars(hc))))  # noqa: S307 - our own expressions
            code = ("import os, time; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import vizlib, keras; "
                    "keras.models.load_model(%r, compile=False); t = time.perf_counter(); "
                    "m = keras.models.load_model(%r, safe_mode=True, compile=False); "
                    "print(time.perf_counter() - t, len(m.layers))") % (str(path), str(path))
            # (loaded twice: the first load pays Keras' one-off start-up)
            try:
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                seconds = float(proc.stdout.split()[0]) / 1 if proc.returncode == 0 else None
                detail = "" if proc.returncode == 0 else proc.stderr[-200:]
            except subprocess.TimeoutExpired:
                seconds, detail = None, f"timeout {timeout:.0f} s (x2 loads)"
        print(f"  load {what:45} {'-' if seconds is None else f'{seconds:.2f} s'} {detail}", flush=True)
        out.append({"make": make, "what": what, "seconds": seconds, "detail": detail})
    return out


def summarise(results: list[dict]) -> dict:
    by: dict[str, dict] = {}
    for r in results:
        s = by.setdefault(r["class"], {"cases": 0, "sizes": [], "outcomes": {}, "worst_seconds": 0.0,
                                       "worst_peak": 0})
        s["cases"] += 1
        if r["file_bytes"]:
            s["sizes"].append(r["file_bytes"])
        s["outcomes"][r["outcome"]] = s["outcomes"].get(r["outcome"], 0) + 1
        s["worst_seconds"] = max(s["worst_seconds"], r["seconds"] or 0.0)
        s["worst_peak"] = max(s["worst_peak"], r["peak_growth"] or 0)
    return by


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="a checkout of an older tree to measure too (its root folder)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-models", action="store_true", help="skip loading the accepted model shapes")
    args = ap.parse_args()
    classes = QUICK if args.quick else CLASSES
    result: dict = {"timeout": args.timeout}
    print("This tree:")
    now = run(classes, str(ROOT), args.timeout)
    result["cases"] = now
    result["summary"] = summarise(now)
    if args.baseline:
        print(f"Baseline {args.baseline}:")
        old = run(classes, str(Path(args.baseline).resolve()), args.timeout)
        result["baseline_cases"] = old
        result["baseline_summary"] = summarise(old)
    if not args.no_models:
        print("Loading the largest accepted model shapes:")
        result["model_loads"] = model_loads(max(args.timeout, 180))
    print("\nWorst per class (this tree):")
    for name, s in result["summary"].items():
        sizes = f"{min(s['sizes']) / 1024:,.0f} KB - {max(s['sizes']) / MB:,.1f} MB" if s["sizes"] else "-"
        print(f"  {name:42} {s['cases']} cases, {sizes:22} {s['outcomes']}  worst {s['worst_seconds']:.2f} s, "
              f"{s['worst_peak'] / MB:.0f} MB")
    save("hostile_uploads", result)


if __name__ == "__main__":
    main()
