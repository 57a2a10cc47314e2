"""Tests for vizlib.modelcheck: a hostile-model corpus built on the fly.

Every hostile file is generated here (no binary blobs in git); each must be
refused with an InputError whose message names the problem, and the canary
file that the Lambda payloads would write must never appear.  The positive
cases prove the allowlist is not too strict: real Keras 3 models, Keras
Applications and the bundled legacy .h5 pass, and the small ones then load
with ``keras.models.load_model(..., safe_mode=True, compile=False)``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vizlib.errors import InputError  # noqa: E402
from vizlib.modelcheck import ALLOWED_CLASSES, ModelFileReport, check_model_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEGACY_MODEL = REPO / "assets" / "models" / "emotion_mini_xception_fer2013.hdf5"

#: The Lambda payloads write here.  It must never exist after a check.
CANARY = str(Path(tempfile.gettempdir()) / f"vizlib-modelcheck-canary-{os.getpid()}")


def _payload(x):
    """What a hostile Lambda would run: create the canary file."""
    with open(CANARY, "w") as fh:
        fh.write("pwned")
    return x


def _clear_canary() -> None:
    if os.path.exists(CANARY):
        os.remove(CANARY)


@pytest.fixture(autouse=True)
def _canary_never_created():
    _clear_canary()  # building a Lambda model runs it once, symbolically
    yield
    assert not os.path.exists(CANARY), "a model file ran code during the check"


def _keras():
    import keras  # imported lazily: the module under test must not need it

    return keras


def refused(path, *fragments: str, **kwargs) -> str:
    """Assert the check refuses ``path`` and the message mentions every fragment."""
    with pytest.raises(InputError) as info:
        check_model_file(path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    # Every message tells the user what to do.
    assert any(w in message for w in ("Upload", "Rebuild", "Rename", "Build", "Save", "Use ", "run the dashboard")), message
    return message


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _small_functional(keras, *, compiled: bool = False):
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.MaxPooling2D(name="pool_a")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv_b")(x)
    x = keras.layers.Activation("gelu", name="act_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    if compiled:
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(2)],
        )
    return model


def _small_sequential(keras):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.1),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="small_seq",
    )


def _layer_zoo(keras):
    """Many allowlisted layers (and keras.ops) at once, to test the size estimates."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="img")
    x = L.Resizing(24, 24)(inputs)
    x = L.RandomFlip()(x)
    x = L.Normalization(mean=0.5, variance=0.25)(x)
    x = L.SeparableConv2D(8, 3, padding="same")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = L.PReLU()(x)
    x = L.GroupNormalization(groups=4)(x)
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same")(x)
    x = L.UpSampling2D()(x)
    x = L.Conv2D(8, 3, strides=4, groups=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    seq = L.Reshape((-1, 8))(x)
    y = L.Conv1D(8, 3, padding="same")(seq)
    a = L.MultiHeadAttention(num_heads=2, key_dim=4)(seq, seq)
    a = L.LayerNormalization()(a + y)  # keras.src.ops.numpy.Add
    a = keras.ops.mean(a, axis=1)  # keras.src.ops.numpy.Mean
    a = L.Dense(5)(a)
    outputs = L.Activation(keras.activations.gelu)(L.LeakyReLU()(a))
    return keras.Model(inputs, outputs, name="zoo")


def _lambda_top(keras):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: _payload(t), name="evil_lambda")(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


def _lambda_nested(keras):
    inner = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(2, 1, name="inner_conv"),
            keras.layers.Lambda(lambda t: (open(CANARY, "w").write("x"), t)[1], name="hidden_lambda"),
        ],
        name="inner_block",
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="outer_conv")(inputs)
    x = inner(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("modelcheck")


@pytest.fixture(scope="session")
def saved(models_dir) -> dict[str, Path]:
    """Build and save every Keras model the tests need, once per session."""
    keras = _keras()
    out: dict[str, Path] = {}

    def save(name: str, model, ext: str = ".keras") -> None:
        path = models_dir / f"{name}{ext}"
        model.save(path)
        out[name] = path

    save("functional", _small_functional(keras))
    save("sequential", _small_sequential(keras))
    save("compiled", _small_functional(keras, compiled=True))
    save("zoo", _layer_zoo(keras))
    save("legacy_saved", _small_functional(keras), ".h5")
    save(
        "vgg_nested",
        keras.Sequential(
            [
                keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        ),
    )
    save("mobilenetv2", keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3)))
    save("efficientnetb0", keras.applications.EfficientNetB0(weights=None))
    save("convnext_tiny", keras.applications.ConvNeXtTiny(weights=None))

    save("lambda_top", _lambda_top(keras))
    save("lambda_nested", _lambda_nested(keras))
    save("lambda_legacy", _lambda_top(keras), ".h5")
    _clear_canary()  # constructing the Lambda models ran the payload once

    weights_only = models_dir / "weights_only.weights.h5"
    _small_functional(keras).save_weights(weights_only)
    out["weights_only"] = weights_only
    keras.backend.clear_session()
    return out


# --------------------------------------------------------------------------
# Crafting helpers
# --------------------------------------------------------------------------


def rewrite_keras_zip(
    src: Path,
    dst: Path,
    config_mutator: Callable[[dict], dict | None] | None = None,
    *,
    metadata_mutator: Callable[[dict], dict | None] | None = None,
    weights: bytes | None = None,
    extra: tuple[tuple[str, bytes], ...] = (),
    raw_config: bytes | None = None,
) -> Path:
    """Copy a valid .keras archive to ``dst``, editing what the caller asks."""
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    if config_mutator is not None:
        config = config_mutator(config) or config
    metadata = json.loads(members["metadata.json"])
    if metadata_mutator is not None:
        metadata = metadata_mutator(metadata) or metadata
    members["config.json"] = raw_config if raw_config is not None else json.dumps(config).encode()
    members["metadata.json"] = json.dumps(metadata).encode()
    if weights is not None:
        members["model.weights.h5"] = weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in ("metadata.json", "config.json", "model.weights.h5"):
                zf.writestr(name, members[name])
            for name, data in extra:
                zf.writestr(zipfile.ZipInfo(name), data)
    return dst


def edit_weights(src: Path, edit: Callable[[h5py.File], None]) -> bytes:
    """The weights of a valid .keras archive, edited in memory by ``edit``."""
    with zipfile.ZipFile(src) as zf:
        bio = io.BytesIO(zf.read("model.weights.h5"))
    with h5py.File(bio, "r+") as f:
        edit(f)
    return bio.getvalue()


def rewrite_legacy_h5(src: Path, dst: Path, mutator: Callable[[dict], dict | None]) -> Path:
    dst.write_bytes(src.read_bytes())
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config = mutator(config) or config
        f.attrs["model_config"] = json.dumps(config)
    return dst


def layer(config: dict, name: str) -> dict:
    """The layer dict called ``name`` anywhere in a config."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") and isinstance(node.get("config"), dict) and node["config"].get("name") == name:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise KeyError(name)


def replace_class(config: dict, name: str, module, class_name: str, inner: dict | None = None,
                  registered_name=None) -> dict:
    target = layer(config, name)
    target["module"] = module
    target["class_name"] = class_name
    target["registered_name"] = registered_name
    if inner is not None:
        target["config"] = {"name": name, **inner}
    return config


# --------------------------------------------------------------------------
# Positive cases
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["functional", "sequential", "compiled", "zoo", "legacy_saved", "vgg_nested", "mobilenetv2",
     "efficientnetb0", "convnext_tiny"],
)
def test_real_models_pass(saved, name):
    report = check_model_file(saved[name])
    assert isinstance(report, ModelFileReport)
    assert report.format == ("h5" if name == "legacy_saved" else "keras")
    assert report.n_layers >= 5
    assert 0 < report.declared_weight_bytes <= 600 * 2**20
    if report.format == "keras":
        # the config-side estimate agrees with the weights file to within 1 %
        assert report.estimated_weight_bytes == pytest.approx(report.declared_weight_bytes, rel=0.01)
        assert report.keras_version
    assert report.input_shapes


def test_convnext_needs_its_internal_layerscale(saved):
    report = check_model_file(saved["convnext_tiny"])
    assert "LayerScale" in report.class_names
    assert ("keras.src.applications.convnext", "LayerScale") in ALLOWED_CLASSES
    assert report.declared_weight_bytes > 100 * 2**20


def test_compiled_flag(saved):
    assert check_model_file(saved["compiled"]).compiled
    assert not check_model_file(saved["functional"]).compiled


def test_bundled_legacy_model_passes():
    report = check_model_file(LEGACY_MODEL)
    assert report.format == "h5"
    assert report.keras_version == "2.0.5"
    assert "SeparableConv2D" in report.class_names
    assert report.input_shapes == ((None, 64, 64, 1),)
    assert report.estimated_weight_bytes is None
    assert report.n_layers > 30


@pytest.mark.parametrize("name", ["functional", "sequential", "compiled", "zoo", "legacy_saved", "vgg_nested"])
def test_accepted_small_models_load_in_safe_mode(saved, name):
    keras = _keras()
    check_model_file(saved[name])
    model = keras.models.load_model(saved[name], safe_mode=True, compile=False)
    assert len(model.layers) >= 3


def test_bundled_legacy_model_loads_in_safe_mode():
    keras = _keras()
    model = keras.models.load_model(LEGACY_MODEL, safe_mode=True, compile=False)
    assert model.output_shape[-1] == 7


@pytest.mark.slow
def test_more_keras_applications_pass_the_allowlist(tmp_path):
    """Configs of other Applications (no weights saved: the allowlist is the point)."""
    keras = _keras()
    empty_weights = io.BytesIO()
    with h5py.File(empty_weights, "w"):
        pass
    builders = {
        "mobilenetv3small": lambda: keras.applications.MobileNetV3Small(weights=None),  # ops.Add/Multiply
        "efficientnetv2b0": lambda: keras.applications.EfficientNetV2B0(weights=None),
        "inceptionresnetv2": lambda: keras.applications.InceptionResNetV2(weights=None),  # CustomScaleLayer
    }
    for name, build in builders.items():
        config = build().to_json().encode()
        keras.backend.clear_session()
        dst = tmp_path / f"{name}.keras"
        with zipfile.ZipFile(dst, "w") as zf:
            zf.writestr("metadata.json", b'{"keras_version": "3.15.1"}')
            zf.writestr("config.json", config)
            zf.writestr("model.weights.h5", empty_weights.getvalue())
        report = check_model_file(dst)
        assert report.estimated_weight_bytes > 2**20, name


def test_allowlist_shape():
    assert all(isinstance(p, tuple) and len(p) == 2 for p in ALLOWED_CLASSES)
    assert all(module == "keras" or module.startswith("keras.") for module, _ in ALLOWED_CLASSES)
    names = {name for _, name in ALLOWED_CLASSES}
    for bad in ("Lambda", "TFSMLayer", "StringLookup", "TextVectorization", "TorchModuleWrapper"):
        assert bad not in names


def test_module_does_not_import_keras():
    # A bare package object stands in for vizlib/__init__.py, which may well
    # import Keras itself: the point is what modelcheck (and errors) import.
    code = (
        "import sys, types; pkg = types.ModuleType('vizlib'); "
        f"pkg.__path__ = [{str(REPO / 'vizlib')!r}]; sys.modules['vizlib'] = pkg; "
        "import vizlib.modelcheck; "
        "bad = [m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# 1, 2, 13: Lambda layers (code) -- top level, nested, legacy h5
# --------------------------------------------------------------------------


def test_lambda_top_level_refused_and_never_runs(saved):
    msg = refused(saved["lambda_top"], "Lambda", "evil_lambda", "Python code")
    assert "built-in Keras layers" in msg
    assert not os.path.exists(CANARY)


def test_lambda_inside_nested_sequential_refused(saved):
    refused(saved["lambda_nested"], "Lambda", "hidden_lambda")


def test_legacy_h5_lambda_refused(saved):
    refused(saved["lambda_legacy"], "Lambda", "evil_lambda")


@pytest.mark.parametrize(
    "layer_dict, fragments",
    [
        # TF-Keras style: marshalled bytecode in a list
        ({"class_name": "Lambda", "config": {"name": "old_lambda", "function": ["4wEAAAAA", None, None],
                                             "function_type": "lambda"}}, ("Lambda", "old_lambda")),
        ({"class_name": "TFOpLambda", "config": {"name": "tf.math.add", "function": "math.add"}},
         ("TFOpLambda",)),
        ({"module": "os", "class_name": "system", "config": {"name": "x"}}, ("os.system",)),
        ({"class_name": "LSTM", "config": {"name": "rnn", "units": 4}}, ("LSTM", "rnn")),
    ],
)
def test_legacy_h5_crafted_configs_refused(tmp_path, layer_dict, fragments):
    def mutate(config):
        config["config"]["layers"].insert(1, {**layer_dict, "inbound_nodes": []})

    refused(rewrite_legacy_h5(LEGACY_MODEL, tmp_path / "crafted.h5", mutate), *fragments)


def test_legacy_h5_training_config_with_python_function_refused(tmp_path):
    dst = tmp_path / "train.h5"
    dst.write_bytes(LEGACY_MODEL.read_bytes())
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        f.attrs["training_config"] = json.dumps(
            {"loss": {"module": "builtins", "class_name": "function", "config": "exec"},
             "optimizer_config": {"class_name": "Adam", "config": {}}}
        )
    refused(dst, "exec")


def test_weights_only_h5_refused(saved, tmp_path):
    dst = tmp_path / "weights.h5"
    dst.write_bytes(saved["weights_only"].read_bytes())
    refused(dst, "no model architecture")


# --------------------------------------------------------------------------
# 3-6: hand-edited config.json
# --------------------------------------------------------------------------


def _conv_b(module, class_name, inner=None, registered_name=None):
    return lambda c: replace_class(c, "conv_b", module, class_name, inner, registered_name)


def _activation_fn(fn: dict):
    def mutate(c):
        layer(c, "conv_a")["config"]["activation"] = fn
    return mutate


def _safe_mode_in_layer(c):
    layer(c, "head")["config"]["safe_mode"] = False


def _safe_mode_top(c):
    c["safe_mode"] = False


def _unsafe_deserialization(c):
    layer(c, "head")["config"]["enable_unsafe_deserialization"] = True


CONFIG_ATTACKS = {
    "os.system": (_conv_b("os", "system", {"command": f"touch {CANARY}"}), ("os.system", "conv_b", "not part of Keras")),
    "subprocess.Popen": (_conv_b("subprocess", "Popen", {"args": ["touch", CANARY]}), ("subprocess.Popen", "conv_b")),
    "builtins.eval": (_conv_b("builtins", "eval"), ("builtins.eval",)),
    "registered os>system": (_conv_b("keras.layers", "Conv2D", None, "os>system"), ("os>system", "conv_b")),
    "function os.system": (_activation_fn({"module": "os", "class_name": "function", "config": "system",
                                           "registered_name": "function"}), ("system", "conv_a")),
    "function builtins.system": (_activation_fn({"module": "builtins", "class_name": "function", "config": "system",
                                                 "registered_name": "function"}), ("system",)),
    "__lambda__ activation": (_activation_fn({"class_name": "__lambda__", "config": {"code": "4wEA", "defaults": None,
                                                                                      "closure": None}}), ("lambda", "conv_a")),
    "__typespec__": (_activation_fn({"class_name": "__typespec__", "spec_name": "TensorSpec", "module": "keras",
                                     "registered_name": None, "config": []}), ("__typespec__",)),
    "keras non-modelling api": (_conv_b("keras.saving", "load_model"), ("keras.saving.load_model",)),
    "keras.utils.get_file": (_conv_b("keras.utils", "get_file"), ("get_file",)),
    "keras internal module": (_conv_b("keras.src.saving.saving_lib", "DiskIOStore"), ("DiskIOStore",)),
    "non-allowlisted keras layer": (_conv_b("keras.layers", "LSTM", {"units": 4}), ("LSTM", "conv_b")),
    "TorchModuleWrapper": (_conv_b("keras.layers", "TorchModuleWrapper", {"module": "gASV"}), ("TorchModuleWrapper",)),
    # 4: safe mode
    "safe_mode in layer": (_safe_mode_in_layer, ("safe mode", "head")),
    "safe_mode top level": (_safe_mode_top, ("safe mode",)),
    "enable_unsafe_deserialization": (_unsafe_deserialization, ("safe mode",)),
    # 5, 6: layers that load programs or files from the server
    "TFSMLayer": (_conv_b("keras.layers", "TFSMLayer", {"filepath": "/tmp/evil_savedmodel", "call_endpoint": "serve"}),
                  ("TFSMLayer", "conv_b", "SavedModel")),
    "StringLookup /etc/passwd": (_conv_b("keras.layers", "StringLookup", {"vocabulary": "/etc/passwd"}),
                                 ("StringLookup", "/etc/passwd")),
    "TextVectorization /etc/passwd": (_conv_b("keras.layers", "TextVectorization", {"vocabulary": "/etc/passwd"}),
                                      ("TextVectorization", "/etc/passwd")),
    "IntegerLookup": (_conv_b("keras.layers", "IntegerLookup", {"vocabulary": "/etc/shadow"}), ("IntegerLookup",)),
}


@pytest.mark.parametrize("attack", sorted(CONFIG_ATTACKS))
def test_hand_edited_config_refused(saved, tmp_path, attack):
    mutator, fragments = CONFIG_ATTACKS[attack]
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "crafted.keras", mutator)
    refused(dst, *fragments)


def test_lambda_smuggled_under_innocent_module_refused(saved, tmp_path):
    def mutate(c):
        replace_class(c, "conv_b", "keras.layers", "Lambda",
                      {"function": {"class_name": "__lambda__", "config": {"code": "4wEA", "defaults": None,
                                                                            "closure": None}}})
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "x.keras", mutate), "Lambda", "conv_b")


def test_safe_mode_in_metadata_refused(saved, tmp_path):
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "meta.keras",
                            metadata_mutator=lambda m: {**m, "safe_mode": False})
    refused(dst, "safe mode", "metadata.json")


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b'{"class_name": "Functional", "class_name": "Lambda", "config": {}}', "twice"),
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'"just a string"', "not a Keras model config"),
        (b"\xff\xfe\x00", "UTF-8"),
        (json.dumps({"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}}).encode(), "not a model"),
    ],
)
def test_malformed_config_refused(saved, tmp_path, raw, fragment):
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "bad.keras", raw_config=raw)
    refused(dst, fragment)


# Config-declared sizes: what Keras would allocate while *building* the model,
# before it ever reads the (tiny) weights file.


def test_config_declaring_huge_dense_refused(saved, tmp_path):
    def mutate(c):
        head = layer(c, "head")
        head["config"]["units"] = 100_000
        head["build_config"] = {"input_shape": [None, 100_000]}
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "dense.keras", mutate), "allocate", "head")


def test_config_absurd_units_refused(saved, tmp_path):
    def mutate(c):
        layer(c, "head")["config"]["units"] = 10**9
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "units.keras", mutate), "units", "head")


def test_weighted_layer_without_build_config_refused(saved, tmp_path):
    def mutate(c):
        del layer(c, "conv_b")["build_config"]
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "nobuild.keras", mutate), "input shape", "conv_b")


def test_huge_input_and_upsampling_refused(saved, tmp_path):
    def big_input(c):
        layer(c, "image")["config"]["batch_shape"] = [None, 100_000, 100_000, 3]
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "in.keras", big_input), "image", "smaller input")

    def upsample(c):
        replace_class(c, "pool_a", "keras.layers", "UpSampling2D", {"size": [4096, 4096]})
    refused(rewrite_keras_zip(saved["functional"], tmp_path / "up.keras", upsample), "size", "pool_a")


# --------------------------------------------------------------------------
# 7: a tiny file declaring 40 GB of weights
# --------------------------------------------------------------------------


def _shape_bomb(saved, tmp_path) -> Path:
    def bomb(f):
        path = "layers/dense/vars/0"
        if path in f:
            del f[path]
        f.create_dataset(path, shape=(100_000, 100_000), dtype="float32")  # no data: nothing stored

    dst = rewrite_keras_zip(saved["functional"], tmp_path / "bomb.keras",
                            weights=edit_weights(saved["functional"], bomb))
    assert dst.stat().st_size < 100 * 1024
    return dst


def test_declared_shape_bomb_refused_without_allocating(saved, tmp_path):
    dst = _shape_bomb(saved, tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(dst, "declare", "GB")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (after - before) * 1024 < 50 * 2**20  # ru_maxrss is in KiB on Linux


def test_declared_shape_bomb_peak_memory_in_fresh_process(saved, tmp_path):
    """Same check in a fresh interpreter, where ru_maxrss has a meaningful baseline."""
    dst = _shape_bomb(saved, tmp_path)
    code = f"""
import json, resource
from vizlib.errors import InputError
from vizlib.modelcheck import check_model_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    check_model_file({str(dst)!r})
    refused = False
except InputError:
    refused = True
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"refused": refused, "grew_kib": after - before}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["refused"]
    assert result["grew_kib"] * 1024 < 50 * 2**20, result


def test_shape_bomb_in_legacy_h5_refused(tmp_path):
    dst = tmp_path / "bomb.h5"
    dst.write_bytes(LEGACY_MODEL.read_bytes())
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        f.create_dataset("model_weights/conv2d_1/huge:0", shape=(100_000, 100_000), dtype="float32")
    refused(dst, "declare")


# --------------------------------------------------------------------------
# 8: zip bomb
# --------------------------------------------------------------------------


def test_zip_bomb_refused_quickly(saved, tmp_path):
    dst = tmp_path / "zipbomb.keras"
    with zipfile.ZipFile(saved["functional"]) as src:
        metadata, config = src.read("metadata.json"), src.read("config.json")
    chunk = bytes(2**20)
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("metadata.json", metadata)
        zf.writestr("config.json", config)
        with zf.open("model.weights.h5", "w", force_zip64=True) as w:
            for _ in range(500):  # 500 MB of zeros, streamed
                w.write(chunk)
    assert dst.stat().st_size < 5 * 2**20
    t0 = time.perf_counter()
    refused(dst, "model.weights.h5", "zip bomb")
    assert time.perf_counter() - t0 < 1


def test_deflated_but_honest_archive_passes(saved, tmp_path):
    """Someone re-zipped a real model with compression: still accepted."""
    dst = tmp_path / "deflated.keras"
    with zipfile.ZipFile(saved["functional"]) as src, \
            zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))
    assert check_model_file(dst).format == "keras"


# --------------------------------------------------------------------------
# 9: unexpected members
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "member, fragment",
    [
        ("../evil", "../evil"),
        ("/etc/cron.d/evil", "/etc/cron.d/evil"),
        ("assets/vocab.txt", "assets/vocab.txt"),
        ("extra.py", "extra.py"),
        ("model.weights.npz", "model.weights.npz"),
        ("config.json", "more than once"),
        ("model.weights.h5", "more than once"),
    ],
)
def test_unexpected_members_refused(saved, tmp_path, member, fragment):
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "extra.keras", extra=((member, b"{}"),))
    refused(dst, fragment)


def test_too_many_members_refused_before_parsing(tmp_path):
    dst = tmp_path / "many.keras"
    with zipfile.ZipFile(dst, "w") as zf:
        for i in range(40):
            zf.writestr(f"f{i}.txt", b"x")
    refused(dst, "40 files")


def test_zip64_directory_claiming_a_billion_entries_refused_before_parsing(tmp_path):
    """A 200-byte file whose zip64 end record claims 10**9 entries: zipfile would
    try to build 10**9 ZipInfo objects; the check reads the count first."""
    n = 10**9
    body = b"PK\x03\x04" + bytes(100)
    z64_offset = len(body)
    body += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, 50, 4)
    body += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_offset, 1)
    body += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    dst = tmp_path / "huge-directory.keras"
    dst.write_bytes(body)
    t0 = time.perf_counter()
    refused(dst, f"{n} files")
    assert time.perf_counter() - t0 < 1


def test_missing_members_refused(saved, tmp_path):
    dst = tmp_path / "partial.keras"
    with zipfile.ZipFile(saved["functional"]) as src, zipfile.ZipFile(dst, "w") as out:
        out.writestr("config.json", src.read("config.json"))
    refused(dst, "not a Keras model", "metadata.json", "model.weights.h5")


# --------------------------------------------------------------------------
# 10, 11: wrong format, junk, truncation
# --------------------------------------------------------------------------


def test_h5_renamed_keras_refused(tmp_path):
    dst = tmp_path / "model.keras"
    dst.write_bytes(LEGACY_MODEL.read_bytes())
    refused(dst, "HDF5", "Rename", ".h5")


def test_keras_renamed_h5_refused(saved, tmp_path):
    dst = tmp_path / "model.h5"
    dst.write_bytes(saved["functional"].read_bytes())
    refused(dst, "zip", "Rename", ".keras")


def test_unknown_extension_refused(saved, tmp_path):
    dst = tmp_path / "model.pkl"
    dst.write_bytes(saved["functional"].read_bytes())
    refused(dst, ".keras")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize(
    "content, fragments",
    [
        (b"", {".keras": "empty", ".h5": "empty"}),
        (np.random.default_rng(0).bytes(4096), {".keras": "not a Keras model file", ".h5": "not a Keras model file"}),
        (b"PK\x03\x04" + np.random.default_rng(1).bytes(4096), {".keras": "not a usable Keras model file", ".h5": "Rename"}),
        (b"\x89HDF\r\n\x1a\n" + np.random.default_rng(2).bytes(4096), {".keras": "Rename", ".h5": "not a usable Keras model file"}),
    ],
    ids=["empty", "random", "zip-magic-then-junk", "hdf5-magic-then-junk"],
)
def test_junk_refused(tmp_path, suffix, content, fragments):
    dst = tmp_path / f"junk{suffix}"
    dst.write_bytes(content)
    refused(dst, fragments[suffix])


def test_zip_that_is_not_a_keras_archive_refused(tmp_path):
    dst = tmp_path / "photos.keras"
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("holiday.jpg", np.random.default_rng(3).bytes(1000))
        zf.writestr("notes.txt", b"hello")
    refused(dst, "holiday.jpg")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_archive_refused(saved, tmp_path, keep):
    data = saved["functional"].read_bytes()
    dst = tmp_path / "cut.keras"
    dst.write_bytes(data[: int(len(data) * keep)])
    refused(dst, "not a usable Keras model file")


def test_truncated_legacy_h5_refused(tmp_path):
    data = LEGACY_MODEL.read_bytes()
    dst = tmp_path / "cut.h5"
    dst.write_bytes(data[: len(data) // 2])
    refused(dst)


def test_file_size_cap(saved):
    refused(saved["functional"], "limited to", max_file_bytes=1000)


def test_weight_cap_is_configurable(saved):
    refused(saved["functional"], "allowed", max_weight_bytes=1000)


# --------------------------------------------------------------------------
# 12: HDF5 links, external and virtual datasets in the weights
# --------------------------------------------------------------------------


def _external_link(f):
    f["layers/dense/vars/evil"] = h5py.ExternalLink("/etc/passwd", "/x")


def _soft_link(f):
    f["layers/dense/vars/alias"] = h5py.SoftLink("/layers/dense/vars/0")


def _external_dataset(f):
    f.create_dataset("layers/dense/vars/ext", shape=(64,), dtype="uint8", external=[("/etc/passwd", 0, 64)])


def _virtual_dataset(f):
    layout = h5py.VirtualLayout(shape=(64,), dtype="uint8")
    layout[:] = h5py.VirtualSource("/etc/passwd.h5", "data", shape=(64,))
    f.create_virtual_dataset("layers/dense/vars/virt", layout)


def _string_dataset(f):
    f.create_dataset("layers/dense/vars/s", data=np.array([b"x" * 10], dtype=h5py.string_dtype()))


def _unknown_filter(f):
    f.create_dataset("layers/dense/vars/z", shape=(4,), dtype="float32", chunks=(4,), compression=32001,
                     allow_unknown_filter=True)


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (_external_link, ("link to another file", "/etc/passwd")),
        (_soft_link, ("SoftLink",)),
        (_external_dataset, ("external file", "/etc/passwd")),
        (_virtual_dataset, ("virtual dataset",)),
        (_string_dataset, ("not a numeric array",)),
        (_unknown_filter, ("filter 32001", "plugin")),
    ],
    ids=["external-link", "soft-link", "external-dataset", "virtual-dataset", "string-dataset", "unknown-filter"],
)
def test_hostile_hdf5_weights_refused(saved, tmp_path, edit, fragments):
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "h5.keras",
                            weights=edit_weights(saved["functional"], edit))
    refused(dst, *fragments)


def test_hard_link_cycle_in_weights_terminates(saved, tmp_path):
    def cycle(f):
        f["layers/dense/vars/loop"] = f["layers"]

    dst = rewrite_keras_zip(saved["functional"], tmp_path / "cycle.keras",
                            weights=edit_weights(saved["functional"], cycle))
    report = check_model_file(dst)  # harmless: each object is counted once
    assert report.declared_weight_bytes == check_model_file(saved["functional"]).declared_weight_bytes


def test_external_link_in_legacy_h5_refused(tmp_path):
    dst = tmp_path / "link.h5"
    dst.write_bytes(LEGACY_MODEL.read_bytes())
    dst.chmod(0o644)
    with h5py.File(dst, "r+") as f:
        f["model_weights/evil"] = h5py.ExternalLink("/etc/passwd", "/")
    refused(dst, "link to another file")


def test_garbage_weights_member_refused(saved, tmp_path):
    dst = rewrite_keras_zip(saved["functional"], tmp_path / "w.keras", weights=b"not hdf5 at all" * 100)
    refused(dst, "model.weights.h5")


# --------------------------------------------------------------------------
# Structure that makes loading slow (issue #13): Keras rebuilds a Sequential
# after every layer it adds (quadratic), and every layer costs time to build.
# The configs are written directly (a check reads only the config), with the
# weights member of a real small model.
# --------------------------------------------------------------------------


def _relu(name: str) -> dict:
    return {"module": "keras.layers", "class_name": "ReLU", "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": "float32", "max_value": None,
                       "negative_slope": 0.0, "threshold": 0.0}}


def _sequential_config(name: str, layers: list, *, with_input: bool = True) -> dict:
    head = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, 4], "dtype": "float32", "name": f"{name}_input"}}]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": name, "trainable": True, "layers": (head if with_input else []) + layers},
            "build_config": {"input_shape": [None, 4]}}


def _relus(prefix: str, n: int) -> list:
    return [_relu(f"{prefix}{i}") for i in range(n)]


def _functional_config(n: int) -> dict:
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": "in",
               "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "in"}, "inbound_nodes": []}]
    layers += [{**_relu(f"r{i}"), "name": f"r{i}"} for i in range(n)]
    return {"module": "keras", "class_name": "Functional", "registered_name": None,
            "config": {"name": "deep", "trainable": True, "layers": layers,
                       "input_layers": [["in", 0, 0]], "output_layers": [[f"r{n - 1}", 0, 0]]}}


def _nested(depth: int) -> dict:
    config = _sequential_config("leaf", _relus("leaf", 1), with_input=False)
    for level in range(depth - 1):
        config = _sequential_config(f"level{level}", [config], with_input=level == depth - 2)
    return config


def _with_config(saved, tmp_path, config: dict, name: str) -> Path:
    return rewrite_keras_zip(saved["sequential"], tmp_path / f"{name}.keras", lambda _: config)


@pytest.mark.parametrize("n", [151, 400, 950])
def test_long_sequential_refused_before_loading(saved, tmp_path, n):
    dst = _with_config(saved, tmp_path, _sequential_config("long", _relus("r", n)), f"seq{n}")
    refused(dst, "Sequential", f"{n:,} layers", "square", "functional model")


@pytest.mark.parametrize("sizes", [(120, 120), (100, 100, 100), (950, 950)])
def test_nested_sequentials_refused_by_their_summed_cost(saved, tmp_path, sizes):
    inner = [_sequential_config(f"inner{i}", _relus(f"s{i}_", n), with_input=False) for i, n in enumerate(sizes)]
    dst = _with_config(saved, tmp_path, _sequential_config("outer", inner), "nested")
    refused(dst, "Sequential", "square")


@pytest.mark.parametrize("n", [2_001, 5_000, 50_000])
def test_too_many_layers_refused(saved, tmp_path, n):
    dst = _with_config(saved, tmp_path, _functional_config(n), f"func{n}")
    refused(dst, "more than 2,000 layers")


@pytest.mark.parametrize("depth", [9, 40])
def test_models_nested_too_deep_refused(saved, tmp_path, depth):
    dst = _with_config(saved, tmp_path, _nested(depth), f"deep{depth}")
    refused(dst, "nests models")


def test_structure_at_the_limits_passes(saved, tmp_path):
    from vizlib import modelcheck

    n = modelcheck.MAX_SEQUENTIAL_LAYERS
    report = check_model_file(_with_config(saved, tmp_path, _sequential_config("ok", _relus("r", n)), "ok"))
    assert report.n_layers == n + 1  # and the InputLayer
    half = [_sequential_config(f"i{k}", _relus(f"s{k}_", 100), with_input=False) for k in range(2)]
    assert check_model_file(_with_config(saved, tmp_path, _sequential_config("two", half), "two")).n_layers == 203
    assert check_model_file(_with_config(saved, tmp_path, _functional_config(1999), "f1999")).n_layers == 2000
    assert check_model_file(_with_config(saved, tmp_path, _nested(8), "deep8")).n_layers >= 8


def test_50000_layer_config_checked_in_bounded_memory(saved, tmp_path):
    """The whole check of a 10 MB, 50,000-layer config, in a fresh interpreter: refused, small peak."""
    dst = _with_config(saved, tmp_path, _functional_config(50_000), "func50k")
    code = f"""
import json, resource
from vizlib.errors import InputError
from vizlib.modelcheck import check_model_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    check_model_file({str(dst)!r})
    refused = False
except InputError:
    refused = True
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"refused": refused, "grew_kib": after - before}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["refused"]
    assert result["grew_kib"] * 1024 < 256 * 2**20, result  # the config is read whole (16 MB cap) and parsed
