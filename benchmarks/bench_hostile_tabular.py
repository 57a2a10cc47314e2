"""Peak memory of the worst hostile table / folder / stored-picture case per class (issue #18), old vs new.

Each case runs in a fresh child (``RLIMIT_AS`` 4 GB, 120 s) against a checkout
given by ``--old`` (e.g. ``git worktree add OLD_TREE <commit>``) and this
one; the child reports the outcome and the growth of its peak RSS (VmHWM)
over its imports. Usage::

    python benchmarks/bench_hostile_tabular.py --old OLD_TREE
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

CHILD = r"""
import json, os, sys, time
sys.path[:0] = [{repo!r}]
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
import pyarrow.parquet, PIL.Image
from vizlib.errors import InputError
from vizlib.atlas import sources
import vizlib.atlas
base, t0 = hwm(), time.time()
try:
    if {action!r} == "crops":
        a = vizlib.atlas.load({path!r})
        out = [a.crops(layer, 0) for layer in a.layers]
    else:
        lst = sources.list_source({path!r})
        data = sources.read_bytes(lst.ref, 0, lst.names[0])
        out = [lst.names]
    outcome = "handled"
except InputError as exc:
    outcome = "refused: " + str(exc)[:70]
except BaseException as exc:
    outcome = "error: " + type(exc).__name__
print(json.dumps({{"outcome": outcome, "growth": hwm() - base, "seconds": time.time() - t0}}))
"""


def run(repo: str, action: str, path: str) -> dict:
    def cap() -> None:  # pragma: no cover - in the child
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    try:
        p = subprocess.run([sys.executable, "-c", CHILD.format(repo=repo, action=action, path=path)],
                           capture_output=True, text=True, timeout=120, preexec_fn=cap, cwd=repo,
                           env=dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="3"))
    except subprocess.TimeoutExpired:
        return {"outcome": "timeout (120 s)", "growth": None, "seconds": 120}
    if p.returncode != 0 or not p.stdout.strip():
        return {"outcome": f"crashed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1][:60] if p.stderr.strip() else ''}",
                "growth": None, "seconds": None}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    args = ap.parse_args()
    import test_hostile_tabular as t

    tmp = Path(tempfile.mkdtemp(prefix="bench-tabular-"))
    cases = [
        ("1 tabular: one 1 MB dictionary value x 20,000 rows (1 MB file)", "read",
         str(t.repeated_dictionary_parquet(tmp / "dict.parquet", rows=20_000))),
        ("1 tabular: one 1 MB dictionary value x 5,000 rows, first row read", "read",
         str(t.repeated_dictionary_parquet(tmp / "dict5k.parquet", rows=5_000))),
        ("2 row count: 300M null rows, no statistics", "read",
         str(t.nulls_parquet(tmp / "nulls.parquet", statistics=False))),
        ("6 paths: file:// folder, symlink loop + links out", "read", t.linked_folder(tmp / "links").as_uri()),
    ]
    odd = tmp / "odd"
    odd.mkdir()
    with open(os.path.join(os.fsencode(odd), b"\xff\xfe.png"), "wb") as fh:
        fh.write(t.hc.small_png())
    cases.append(("7 names: b'\\xff\\xfe.png' in a folder", "read", str(odd)))
    root = tmp / "atlases"
    root.mkdir()
    import vizlib.atlas

    vizlib.atlas.build("emotion_cnn", str(REPO / "assets" / "samples"), str(root / "good"), top=13)
    cases.append(("5 pictures: atlas of 36 MP crops, all layers shown", "crops", str(t.bomb_atlas(root))))
    print("| class / case | before: outcome | before: peak growth | after: outcome | after: peak growth |")
    print("|---|---|---|---|---|")
    for label, action, path in cases:
        old, new = run(args.old, action, path), run(str(REPO), action, path)

        def mb(r: dict) -> str:
            return "n/a" if r["growth"] is None else f"{r['growth'] / 2**20:,.0f} MB"

        print(f"| {label} | {old['outcome']} | {mb(old)} | {new['outcome']} | {mb(new)} |", flush=True)


if __name__ == "__main__":
    main()
