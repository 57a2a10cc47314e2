"""Dataset atlas on Ray (issue #12): a local Ray instance, and a two-node cluster simulated on this machine
(``ray start --head`` + a worker node with its own resources), both giving the local engine's bytes.

Ray is optional for the app, required here: without it these tests skip, except in CI (``CI`` set), where
they fail. Ray starts slowly, so each module-scoped cluster is started once and kept small.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optional import require_ray

import vizlib.atlas
from vizlib.atlas.synthetic import make_dataset

REPO = Path(__file__).resolve().parent.parent
K, BATCH, SHARD = 4, 4, 8

require_ray(module_level=True)

#: The simulated cluster is on loopback only; token authentication (Ray's default) is for real networks.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("ray-data") / "images", 22, side=80, seed=3)
    (root / "part0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="module")
def local_atlas(data, tmp_path_factory):
    return vizlib.atlas.build("emotion_cnn", data, tmp_path_factory.mktemp("ray-local") / "atlas", top=K,
                              batch_size=BATCH, shard_size=SHARD)


def _same_tables(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*.parquet"))
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


def test_local_ray_instance_gives_the_local_engines_bytes(data, local_atlas, tmp_path):
    import ray

    try:
        got = vizlib.atlas.build("emotion_cnn", data, tmp_path / "atlas", top=K, batch_size=BATCH, shard_size=SHARD,
                                 engine="ray", ray_init={"num_cpus": 2, "object_store_memory": 80 * 2**20})
    finally:
        if ray.is_initialized():  # pragma: no cover - build shuts down the instance it started
            ray.shutdown()
    assert not ray.is_initialized()
    _same_tables(local_atlas.directory, got.directory)
    run = got.manifest["runs"][-1]
    assert run["engine"] == "ray" and run["ray"]["address"] == "local"
    assert sum(run["ray"]["images_per_node"].values()) == got.manifest["counts"]["images"]
    assert got.manifest["failures"] == local_atlas.manifest["failures"] != []


# --------------------------------------------------------------------- a two-node cluster on one machine


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray_cli() -> list[str]:
    found = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [found] if found else [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


def _node_args(ports: list[int], worker_ports: int) -> list[str]:
    """Every port of a node chosen here: two nodes on one machine must not share any."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
             "metrics-export-port", "runtime-env-agent-port")
    return [f"--{n}={p}" for n, p in zip(names, ports)] + [
        f"--min-worker-port={worker_ports}", f"--max-worker-port={worker_ports + 199}",
        "--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--block",
        "--node-ip-address=127.0.0.1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a worker node (its own process tree, its own resource), stopped afterwards."""
    logs = tmp_path_factory.mktemp("ray-cluster")
    env = dict(os.environ, **RAY_ENV)
    # Worker port ranges clear of each other, of Ray's defaults and of the ports the OS hands out (its ephemeral
    # range starts at 32768): CI once drew a free port inside a worker range and the node refused to start.
    base = 20000 + (os.getpid() % 25) * 400
    ports = [p for p in _free_ports(40) if not base <= p < base + 400][:14]
    address = f"127.0.0.1:{ports[0]}"
    procs: list[subprocess.Popen] = []

    def start(args: list[str], log: str) -> None:
        procs.append(subprocess.Popen(_ray_cli() + ["start", *args], env=env, stdout=open(logs / log, "w"),
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))

    def wait_for(check, what: str) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            r = subprocess.run(_ray_cli() + ["status", f"--address={address}"], env=env, capture_output=True,
                               text=True, timeout=120)
            if r.returncode == 0 and check(r.stdout):
                return
            time.sleep(1)
        tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs.iterdir())
        raise RuntimeError(f"the Ray {what} did not come up:\n{tails}")

    try:
        start(["--head", f"--port={ports[0]}", f"--ray-client-server-port={ports[1]}", "--include-dashboard=false",
               *_node_args(ports[2:8], base)], "head.log")
        wait_for(lambda out: True, "head node")
        start([f"--address={address}", '--resources={"atlas_worker_node": 1}', *_node_args(ports[8:14], base + 200)],
              "worker.log")
        wait_for(lambda out: "atlas_worker_node" in out and "2.0 CPU" in out, "worker node")
        yield address
    finally:
        for p in reversed(procs):  # `ray start --block` stops its node's processes when it is told to stop
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_two_node_cluster_through_the_cli(cluster, data, local_atlas, tmp_path):
    out = tmp_path / "atlas"
    env = dict(os.environ, PYTHONPATH=str(REPO), **RAY_ENV)
    r = subprocess.run([sys.executable, "-m", "vizlib.atlas", "build", "--model", "emotion_cnn", "--images", str(data),
                        "--top", str(K), "--engine", "ray", "--address", cluster, "--out", str(out),
                        "--batch-size", str(BATCH), "--shard-size", str(SHARD), "--quiet"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    _same_tables(local_atlas.directory, out)
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["runs"][-1]
    assert run["ray"]["address"] == cluster and run["ray"]["nodes"] == 2 and run["ray"]["actors"] == 2
    per_node, decoded = run["ray"]["images_per_node"], run["ray"]["decoded_per_node"]
    assert sum(per_node.values()) == sum(decoded.values()) == manifest["counts"]["images"]
    assert len(set(per_node) | set(decoded)) == 2, run["ray"]  # both nodes did work
    atlas = vizlib.atlas.load(out)
    assert atlas.top("conv2d_7", 2) == local_atlas.top("conv2d_7", 2)
