"""vizlib.isolation: uploaded models load and run in a child process with limits.

Real models, offline: small CNNs saved to tmp files, the bundled emotion model,
a Lambda model that must never run, a 100 MB model that must not reach the
parent's memory.  Each IsolatedModel costs one child start-up (~4-5 s: Python,
TensorFlow import, model load), so the tests share the few they need.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vizlib.errors import InputError  # noqa: E402
from vizlib.extract import decode, predict  # noqa: E402,F401
from vizlib.layers import conv_layers, find_layer, layer_table, spatial_layers  # noqa: E402,F401
from vizlib.isolation import IsolatedModel, max_response_bytes  # noqa: E402
from vizlib.wire import Malformed, check_specs as _check_specs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "assets" / "models" / "emotion_mini_xception_fer2013.keras"
FACE = REPO / "assets" / "samples" / "astronaut_face.jpg"
MiB = 2**20


def fwd(m, batch, layers, predictions=True):
    """Activations through the model contract: raw pixels (or PIL images) in, as every model kind takes them."""
    r = m.run("extract.forward", batch, layers=list(layers), predictions=predictions)
    return {n: r[f"act:{n}"] for n in r["names"]}, r.get("output")


def chan(m, batch, layer, channel):
    return m.run("extract.channel", batch, layer=layer, channel=channel)["maps"]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by someone else counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture(scope="module")
def small_path(tmp_path_factory) -> Path:
    """A small functional CNN: two Conv2D layers, softmax head, 32x32 RGB."""
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(5, activation="softmax", name="probs")(x)
    path = tmp_path_factory.mktemp("iso") / "small.keras"
    keras.Model(inp, out, name="small_cnn").save(path)
    return path


@pytest.fixture(scope="module")
def big_path(tmp_path_factory) -> Path:
    """Tiny weights, heavy activations: 256x256 input, 64-filter convs (16 MB of maps per image)."""
    import keras

    keras.utils.set_random_seed(2)
    inp = keras.Input((256, 256, 3))
    x = keras.layers.Conv2D(64, 3, activation="relu", name="wide")(inp)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="deep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    path = tmp_path_factory.mktemp("iso") / "big.keras"
    keras.Model(inp, out, name="big_maps").save(path)
    return path


@pytest.fixture(scope="module")
def small(small_path):
    with IsolatedModel(small_path, preprocess="unit", title="small") as m:
        yield m


def _raw_batch(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, c)).astype(np.float32)


# --------------------------------------------------------------------------- a working model


def test_description_is_plain_data(small, small_path):
    from vizlib.models import file_sha256
    from vizlib.layers import LayerInfo

    assert small.key == f"file:{file_sha256(small_path)}:unit"
    assert small.title == "small" and small.label == "small"
    assert small.input_size == (32, 32) and small.channels == 3
    assert small.preprocess_name == "unit" and small.is_classifier
    assert small.class_names is None
    assert all(type(i) is LayerInfo for i in small.layers)
    shapes = {i.name: (i.kind, i.output_shape) for i in small.layers}
    assert shapes["conv1"] == ("Conv2D", (30, 30, 8))
    assert shapes["pool1"] == ("MaxPooling2D", (15, 15, 8))
    assert shapes["conv2"] == ("Conv2D", (13, 13, 16))
    assert shapes["probs"] == ("Dense", (5,))
    assert [i.index for i in small.layers] == list(range(len(small.layers)))
    assert [i.name for i in conv_layers(small)] == ["conv1", "conv2"]
    assert [i.name for i in spatial_layers(small)] == ["conv1", "pool1", "conv2"]
    assert small.pid is not None and small.pid != os.getpid()


def test_forward_equals_in_process(small, small_path):
    import keras

    from vizlib.extract import forward
    from vizlib.models import load_model_file

    batch = _raw_batch(6, 32, 32, 3)
    acts, out = fwd(small, batch, ["conv1", "conv2"])
    assert set(acts) == {"conv1", "conv2"} and acts["conv1"].shape == (6, 30, 30, 8)
    assert acts["conv2"].shape == (6, 13, 13, 16) and out.shape == (6, 5)
    assert acts["conv1"].dtype == np.float32 and acts["conv1"].flags.writeable

    here = load_model_file(small_path, preprocess="unit")
    ref_acts, ref_out = forward(here, batch / 255.0, ["conv1", "conv2"])
    for name in ("conv1", "conv2"):
        np.testing.assert_allclose(acts[name], ref_acts[name], atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    plain = keras.models.load_model(small_path, compile=False, safe_mode=True)
    np.testing.assert_allclose(out, np.asarray(plain(batch / 255.0)), atol=1e-5)

    none_acts, none_out = fwd(small, batch, ["pool1"], predictions=False)
    assert none_out is None and none_acts["pool1"].shape == (6, 15, 15, 8)


def test_channel_equals_forward_slice(small):
    batch = _raw_batch(5, 32, 32, 3, seed=3)
    acts, _ = fwd(small, batch, ["conv2"], predictions=False)
    maps = chan(small, batch, "conv2", 7)
    assert maps.shape == (5, 13, 13)
    np.testing.assert_allclose(maps, acts["conv2"][..., 7], atol=1e-6)


def test_pil_images_and_single_image(small):
    from PIL import Image

    from vizlib.images import to_batch

    img = Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    acts_pil, out_pil = fwd(small, [img], ["conv1"])
    acts_arr, out_arr = fwd(small, to_batch([img], (32, 32), channels=3)[0], ["conv1"])
    np.testing.assert_array_equal(acts_pil["conv1"], acts_arr["conv1"])
    np.testing.assert_array_equal(out_pil, out_arr)


def test_input_errors_come_back_and_child_survives(small):
    pid = small.pid
    with pytest.raises(InputError, match="no layer named 'nope'"):
        fwd(small, _raw_batch(1, 32, 32, 3), ["nope"])
    with pytest.raises(InputError, match="not a 2D map"):
        fwd(small, _raw_batch(1, 32, 32, 3), ["probs"])
    with pytest.raises(InputError, match="no channel 99"):
        chan(small, _raw_batch(1, 32, 32, 3), "conv1", 99)
    with pytest.raises(InputError, match=r"Expected a batch of shape \(N, 32, 32, 3\)"):
        fwd(small, np.zeros((1, 64, 64, 3), np.float32), ["conv1"])
    with pytest.raises(InputError, match="No images"):
        fwd(small, np.zeros((0, 32, 32, 3), np.float32), ["conv1"])
    assert small.pid == pid
    fwd(small, _raw_batch(1, 32, 32, 3), ["conv1"])


def test_threads_share_one_model(small):
    batches = [_raw_batch(2, 32, 32, 3, seed=s) for s in range(4)]
    expected = [fwd(small, b, ["conv2"])[0]["conv2"] for b in batches]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                got, _ = fwd(small, batches[i], ["conv2"])
                np.testing.assert_array_equal(got["conv2"], expected[i])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_bundled_model_predicts_happy():
    from vizlib.images import load_image, to_batch

    with IsolatedModel(BUNDLED, preprocess="symmetric") as m:
        assert m.input_size == (64, 64) and m.channels == 1
        assert m.class_names == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        batch = to_batch([load_image(FACE)], (64, 64), channels=1)
        first, last = conv_layers(m)[0], conv_layers(m)[-1]
        acts, out = fwd(m, batch, [first.name, last.name])
        assert int(np.argmax(out[0])) == 3
        assert decode(m, out)[0][0][0] == "happy"
        assert acts[last.name].shape == (1, *last.output_shape)


# --------------------------------------------------------------------------- misbehaving children


def test_child_killed_from_outside(small_path):
    with IsolatedModel(small_path, restart=False) as m:
        pid = m.pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(InputError, match="process stopped") as info:
            fwd(m, _raw_batch(1, 32, 32, 3), ["conv1"])
        assert "SIGKILL" in str(info.value)
        assert not _alive(pid) and m.pid is None
        with pytest.raises(InputError, match="process stopped"):  # restart=False: stays stopped
            chan(m, _raw_batch(1, 32, 32, 3), "conv1", 0)
    assert os.getpid()  # the parent is fine


def test_memory_limit_stops_the_child(small, big_path):
    baseline = small.child_status()["VmData"]  # TensorFlow + a small model, after a few requests
    assert 150 * MiB < baseline < 1200 * MiB
    limit = baseline + 200 * MiB
    with IsolatedModel(big_path, memory_limit_bytes=limit, restart=False) as m:
        acts, _ = fwd(m, _raw_batch(1, 256, 256, 3), ["wide"], predictions=False)  # 16 MB: fine
        assert acts["wide"].shape == (1, 254, 254, 64)
        pid = m.pid
        # No layer asked for (within any activation budget), but computing the prediction
        # for 16 images needs ~520 MB of intermediate maps inside TensorFlow.
        with pytest.raises(InputError, match="process stopped|ran out of memory") as info:
            fwd(m, _raw_batch(16, 256, 256, 3), [], predictions=True)
        if "process stopped" in str(info.value):
            assert not _alive(pid)
            with pytest.raises(InputError, match="process stopped"):
                fwd(m, _raw_batch(1, 256, 256, 3), ["wide"])
        else:  # numpy's MemoryError: the child refused and lives on
            assert m.pid == pid


def test_large_maps_run_in_calls_that_fit_the_memory_limit(big_path):
    """16 images of 256x256x64 maps in one TensorFlow call need more than 3 GB of scratch
    space (the child died with SIGSEGV): forward and atlas calls are sized by the largest map."""
    from vizlib.atlas.pipeline import STATS_OP, default_batch_size

    with IsolatedModel(big_path) as m:
        _, out = fwd(m, _raw_batch(16, 256, 256, 3), [], predictions=True)
        assert out.shape == (16, 3) and np.isfinite(out).all()
        n = default_batch_size(m)
        assert 1 <= n < 16
        r = m.run(STATS_OP, _raw_batch(n, 256, 256, 3), layers=["wide", "deep"])
        assert np.asarray(r["max:1"]).shape == (n, 64)
        assert m.starts == 1  # no crash and restart on the way


def test_timeout_kills_then_restarts(big_path):
    with IsolatedModel(big_path, timeout=0.5) as m:
        pid = m.pid
        start = time.monotonic()
        with pytest.raises(InputError, match="process stopped") as info:
            fwd(m, _raw_batch(48, 256, 256, 3), [], predictions=True)
        assert time.monotonic() - start < 5
        assert "longer than 0.5 s" in str(info.value)
        assert not _alive(pid) and m.pid is None
        m.timeout = 60.0  # restart=True: the next request starts a fresh child
        _, out = fwd(m, _raw_batch(1, 256, 256, 3), [])
        assert out.shape == (1, 3) and m.pid not in (None, pid) and m.starts == 2


def test_lambda_model_refused_and_never_runs(tmp_path):
    import keras

    canary = str(tmp_path / "canary")
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(2, 3)(inp)
    x = keras.layers.Lambda(lambda t: (open(canary, "w").write("x"), t)[1], name="evil")(x)
    path = tmp_path / "evil.keras"
    keras.Model(inp, x).save(path)
    Path(canary).unlink(missing_ok=True)  # building ran the payload once, symbolically, here
    with pytest.raises(InputError, match="Lambda") as info:
        IsolatedModel(path)
    assert "Traceback" not in str(info.value)
    assert not os.path.exists(canary)


def test_parent_memory_does_not_hold_the_model(tmp_path):
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(1600, activation="softmax")(x)  # 16384 x 1600 floats: 105 MB
    path = tmp_path / "heavy.keras"
    keras.Model(inp, out).save(path)
    assert path.stat().st_size > 100 * MiB
    script = (
        "import json, resource, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import numpy as np\n"
        "from vizlib.isolation import IsolatedModel\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"m = IsolatedModel({str(path)!r})\n"
        "out = m.run('extract.forward', np.zeros((1, 32, 32, 3), np.float32), layers=['conv'])['output']\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'before': before, 'after': after, 'out': list(out.shape),\n"
        "                  'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules,\n"
        "                  'child': m.child_status()['RssAnon'], 'pid': m.pid,\n"
        "                  'folder': m._state.folder}), flush=True)\n"
        "import os; os._exit(0)  # no clean-up: the orphaned child must notice and exit\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["out"] == [1, 1600]
    assert not facts["tf"] and not facts["keras"]
    grown = (facts["after"] - facts["before"]) * 1024  # ru_maxrss is in KiB on Linux
    assert grown < 30 * MiB, facts
    assert facts["child"] > 100 * MiB  # the weights live in the child
    deadline = time.monotonic() + 10
    while _alive(facts["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(facts["pid"]), "the child outlived its parent"
    gone = not os.path.exists(facts["folder"])
    shutil.rmtree(facts["folder"], ignore_errors=True)
    assert gone, "the orphaned child left the model copy behind"


# --------------------------------------------------------------------------- the wire


def test_reply_headers_are_checked_before_allocating():
    assert _check_specs([["<f4", [2, 3]]], 100) == [("<f4", (2, 3))]
    for bad in ([["|O", [1]]], [["<f4", [-1]]], [["<f4", [1.5]]], [["<f4", "12"]], {"a": 1},
                [["<f4", [1] * 9]], [["<U4", [1]]]):
        with pytest.raises(Malformed):
            _check_specs(bad, 100)
    with pytest.raises(Malformed, match="more than"):
        _check_specs([["<f4", [2**20, 2**20]]], max_response_bytes())


def test_refused_before_starting(tmp_path):
    with pytest.raises(InputError, match="No model file"):
        IsolatedModel(tmp_path / "missing.keras")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(InputError, match="not a Keras model file"):
        IsolatedModel(tmp_path / "model.txt")
    with pytest.raises(InputError, match="Unknown preprocessing"):
        IsolatedModel(BUNDLED, preprocess="weird")
