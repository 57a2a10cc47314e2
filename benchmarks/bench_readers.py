"""Hostile inputs, round 3 (issue #18 classes 3, 4, 8, 9, 10): peak RSS of the worst case per class.

    python benchmarks/bench_readers.py                          # this tree
    python benchmarks/bench_readers.py --baseline OLD_TREE      # and an older checkout, e.g.
        git worktree add OLD_TREE b2ca2c2                       #   the tree before these fixes

Each case runs in its own fresh interpreter (under a 6 GiB address-space cap and a timeout)
and reports its outcome and the process's peak RSS (``ru_maxrss``: imports included, so the
floor is what ``import vizlib`` plus the case's imports cost). Cases:

* class 3 -- a zipped atlas whose ``thumbs.parquet`` inflates to 900 MB at a ratio under the
  zip-bomb limit (``vizlib.atlas.store.extract_zip``);
* class 4 -- an atlas manifest of 16 MB holding four million numbers, and one nesting 100,000
  lists deep (``vizlib.atlas.load``);
* class 8 -- a feature-visualisation cache entry whose header declares a 1 TiB image
  (``featvis.DiskCache.get``: it must be a miss and the entry dropped);
* class 9 -- a 1,999-layer functional chain uploaded as a ``.keras`` file
  (``vizlib.models.load_model_file``: the check, then Keras);
* class 10 -- ``vizlib.links.to_query`` given a dict.

Results: ``benchmarks/out/readers.json``; the table goes into ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile
import zlib
from pathlib import Path

from _common import ROOT, save

GB = 2**30


def atlas_zip_of_inflating_thumbs(path: Path, n_bytes: int = 900 * 2**20) -> None:
    """A zipped 'atlas': a small manifest and a thumbs.parquet of ``n_bytes`` that compresses ~60:1."""
    rng_block = bytes((i * 131 + (i >> 7)) % 251 if i % 64 == 0 else 0 for i in range(2**20))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("atlas/manifest.json", b"{}")
        with zf.open("atlas/thumbs.parquet", "w", force_zip64=True) as w:
            for _ in range(n_bytes // len(rng_block)):
                w.write(rng_block)


def atlas_with_manifest(directory: Path, source: Path, raw: bytes) -> None:
    import shutil

    shutil.copytree(source, directory)
    (directory / "manifest.json").write_bytes(raw)


def npy_declaring(shape: tuple, dtype: str = "|u1") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def prepare(work: Path, root: Path) -> list[dict]:
    """Build the hostile files once (with this tree); every case names the code it runs."""
    sys.path.insert(0, str(root / "tests"))
    import hostile_corpus as hc

    atlas_zip_of_inflating_thumbs(work / "atlas.zip")
    # A real atlas to damage (built by this tree; the old tree reads the same format).
    src = work / "atlas-src"
    subprocess.run([sys.executable, "-m", "vizlib.atlas", "build", "--model", "emotion_cnn", "--images",
                    str(root / "assets" / "samples"), "--out", str(src), "--top", "3", "--quiet"], cwd=root,
                   check=True, capture_output=True)
    base = json.loads((src / "manifest.json").read_text())
    numbers = json.dumps({**base, "extra": [7] * 4_000_000}).encode()
    deep = json.dumps({**base, "extra": "X"}).encode().replace(b'"X"', b"[" * 100_000 + b"]" * 100_000)
    atlas_with_manifest(work / "manifest-numbers", src, numbers)
    atlas_with_manifest(work / "manifest-deep", src, deep)
    cache = work / "cache"
    cache.mkdir()
    (cache / "k.img.npy").write_bytes(npy_declaring((2**40,)))
    (cache / "k.stats.npy").write_bytes(npy_declaring((6, 8), "<f4") + b"\0" * 192)
    (work / "deep.keras").write_bytes(hc.keras_archive(hc.deep_functional(1999)))
    w = str(work)
    return [
        {"class": "3 ZIP", "case": "zipped atlas, thumbs.parquet inflating to 900 MB",
         "code": f"import tempfile; from vizlib.atlas.store import extract_zip; "
                 f"extract_zip(open({w + '/atlas.zip'!r}, 'rb').read(), tempfile.mkdtemp())"},
        {"class": "4 JSON", "case": "16 MB manifest of 4 million numbers",
         "code": f"import vizlib.atlas; vizlib.atlas.load({w + '/manifest-numbers'!r})"},
        {"class": "4 JSON", "case": "manifest nesting 100,000 lists deep",
         "code": f"import vizlib.atlas; vizlib.atlas.load({w + '/manifest-deep'!r})"},
        {"class": "8 cache", "case": "cache entry declaring a 1 TiB image",
         "code": f"import shutil, tempfile; c = tempfile.mkdtemp(); shutil.copytree({w + '/cache'!r}, c, "
                 f"dirs_exist_ok=True); from vizlib.featvis import DiskCache; r = DiskCache(c, max_bytes=10**9)"
                 f".get('k', (2**40, 1, 1), 8); assert r is None and not list(__import__('pathlib').Path(c).glob('k.*')), 'entry kept'"},
        {"class": "9 model", "case": "1,999-layer functional chain (.keras)",
         "code": f"from vizlib.models import load_model_file; load_model_file({w + '/deep.keras'!r})"},
        {"class": "10 types", "case": "vizlib.links.to_query({...})",
         "code": "import vizlib.links; vizlib.links.to_query({'model': 'vgg16'})"},
    ]


RUNNER = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import vizlib
    from vizlib.errors import InputError
    t0 = time.perf_counter()
    try:
        exec(sys.argv[2])
        outcome, detail = "handled", ""
    except InputError as exc:
        outcome, detail = "refused", str(exc)
    except BaseException as exc:
        outcome, detail = "error", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"outcome": outcome, "detail": detail[:200], "seconds": time.perf_counter() - t0,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


def run(case: dict, root: Path, timeout: float) -> dict:
    def cap() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (6 * GB, 6 * GB))

    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(root), case["code"]], cwd=root, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=cap)
    except subprocess.TimeoutExpired:
        return {**case, "outcome": "timeout", "detail": "", "seconds": timeout, "peak_rss": None}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {**case, "outcome": "crashed", "detail": proc.stderr[-200:], "seconds": None, "peak_rss": None}
    return {**case, **json.loads(lines[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=None, help="an older checkout to measure the same cases in")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    trees = [("after", ROOT)] + ([("before", Path(args.baseline))] if args.baseline else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = prepare(Path(tmp), ROOT)
        for label, root in trees:
            for case in cases:
                r = run(case, root, args.timeout)
                r["tree"] = label
                results.append(r)
                mb = "-" if r["peak_rss"] is None else f"{r['peak_rss'] / 2**20:,.0f} MB"
                print(f"{label:6} {r['class']:9} {r['case'][:52]:52} {r['outcome']:8} {mb:>9}  {r['detail'][:90]}",
                      flush=True)
    save("readers", {"cases": results})


if __name__ == "__main__":
    main()
