"""The model catalogue: the bundled model, Keras Applications, files and in-memory models.

Every model the dashboard shows arrives here and leaves as a :class:`LoadedModel`:
the Keras model plus the facts needed to feed it and read its output (input
size, grey or colour, which ``preprocess_input``, class names, which weights).
Model facts live next to the model, as in ``keras.applications``.
"""

from __future__ import annotations

import hashlib
import logging
import json
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vizlib.errors import InputError, hide_paths
from vizlib.modelfit import AUTO, image_input, resolve_scaling
from vizlib.settings import settings

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_MODEL_PATH = ASSETS / "models" / "emotion_mini_xception_fer2013.keras"
BUNDLED_MODEL_SOURCE = ASSETS / "models" / "emotion_mini_xception_fer2013.hdf5"
IMAGENET_CLASSES_PATH = ASSETS / "imagenet_class_names.json"

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Where Keras Applications fetch ImageNet weights from. Kept here, not inside
#: Keras, so "is it cached?" can be answered without building the model.
WEIGHTS_HOST = "storage.googleapis.com"
#: Seconds to wait for the weights host before saying "no network".
NETWORK_TIMEOUT = 3.0

Preprocess = Callable[[np.ndarray], np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / 255.0


def _symmetric(x: np.ndarray) -> np.ndarray:
    return x / 127.5 - 1.0


def _raw(x: np.ndarray) -> np.ndarray:
    return x


def _caffe(x: np.ndarray) -> np.ndarray:
    from keras.applications import vgg16

    return vgg16.preprocess_input(np.array(x, dtype=np.float32, copy=True))


def _torch(x: np.ndarray) -> np.ndarray:
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    x = x / 255.0
    if x.shape[-1] == 3:
        return (x - mean) / std
    return (x - mean.mean()) / std.mean()


#: Input scalings a user can pick for a model of their own (name -> (label, function)).
PREPROCESSING: dict[str, tuple[str, Preprocess]] = {
    "unit": ("x / 255  (0 to 1)", _unit),
    "symmetric": ("x / 127.5 - 1  (-1 to 1, Inception / MobileNet style)", _symmetric),
    "raw": ("none  (0 to 255; the model rescales itself)", _raw),
    "caffe": ("VGG / ResNet 'caffe'  (BGR, ImageNet mean subtracted)", _caffe),
    "torch": ("PyTorch style  (x / 255, ImageNet mean and std)", _torch),
}


@dataclass(frozen=True)
class CatalogueEntry:
    """One Keras Applications architecture and how to feed it."""

    name: str
    title: str
    constructor: str  # attribute of keras.applications
    module: str  # module of keras.applications holding preprocess_input
    input_size: int
    weights_file: str  # file name Keras caches the ImageNet weights under
    weights_mb: int  # download size, to tell the user before they wait
    weights_dir: str  # folder of the Keras Applications weights bucket
    weights_hash: Optional[str] = None  # the hash Keras Applications check the file against (md5 or sha256)

    @property
    def weights_url(self) -> str:
        """Where Keras Applications download the ImageNet weights (with the top) from."""
        if self.weights_dir == "":
            return f"https://{WEIGHTS_HOST}/keras-applications/{self.weights_file}"
        return f"https://{WEIGHTS_HOST}/tensorflow/keras-applications/{self.weights_dir}/{self.weights_file}"

    def build(self, weights: Optional[str]) -> Any:
        import keras

        ctor = getattr(keras.applications, self.constructor)
        return ctor(weights=weights, include_top=True)

    def preprocess(self) -> Preprocess:
        import keras

        fn = getattr(keras.applications, self.module).preprocess_input

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(fn(np.array(x, dtype=np.float32, copy=True)), dtype=np.float32)

        run.__name__ = f"{self.module}.preprocess_input"
        return run


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        CatalogueEntry("vgg16", "VGG16", "VGG16", "vgg16", 224,
                       "vgg16_weights_tf_dim_ordering_tf_kernels.h5", 528, "vgg16",
                       "64373286793e3c8b2b4e3219cbf3544b"),
        CatalogueEntry("vgg19", "VGG19", "VGG19", "vgg19", 224,
                       "vgg19_weights_tf_dim_ordering_tf_kernels.h5", 549, "vgg19",
                       "cbe5617147190e668d6c5d5026f83318"),
        CatalogueEntry("resnet50", "ResNet50", "ResNet50", "resnet50", 224,
                       "resnet50_weights_tf_dim_ordering_tf_kernels.h5", 98, "resnet",
                       "2cb95161c43110f7111970584f804107"),
        CatalogueEntry("mobilenet_v2", "MobileNetV2", "MobileNetV2", "mobilenet_v2", 224,
                       "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", 14, "mobilenet_v2"),
        CatalogueEntry("efficientnet_b0", "EfficientNetB0", "EfficientNetB0", "efficientnet", 224,
                       "efficientnetb0.h5", 21, "",
                       "902e53a9f72be733fc0bcb005b3ebbac"),
        CatalogueEntry("inception_v3", "InceptionV3", "InceptionV3", "inception_v3", 299,
                       "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", 92, "inception_v3",
                       "9a0d58056eeedaa3f26cb7ebd46da564"),
        CatalogueEntry("densenet121", "DenseNet121", "DenseNet121", "densenet", 224,
                       "densenet121_weights_tf_dim_ordering_tf_kernels.h5", 33, "densenet",
                       "9d60b8095a5708f2dcce2bca79d332c7"),
        CatalogueEntry("xception", "Xception", "Xception", "xception", 299,
                       "xception_weights_tf_dim_ordering_tf_kernels.h5", 88, "xception",
                       "0a58e3b7378bc2990ea3b43d5981f1f6"),
        CatalogueEntry("convnext_tiny", "ConvNeXtTiny", "ConvNeXtTiny", "convnext", 224,
                       "convnext_tiny.h5", 110, "convnext",
                       "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff"),
    ]
}

BUNDLED_NAME = "emotion_cnn"
BUNDLED_TITLE = "Facial expression CNN (bundled)"


@dataclass(eq=False)
class LoadedModel:
    """A Keras model in this process and everything needed to feed it and read its output.

    Satisfies :class:`vizlib.contract.VizModel`. ``key`` identifies the model's
    content (catalogue name and weights, or the SHA-256 of an uploaded file) and
    is what caches are keyed by.
    """

    key: str
    title: str
    model: Any  # keras.Model
    input_size: tuple[int, int]  # (height, width)
    channels: int  # 1 for greyscale, 3 for RGB
    preprocess: Preprocess
    preprocess_name: str
    weights: str  # "imagenet", "untrained", "bundled", "file", "in-memory"
    class_names: Optional[list[str]] = None
    source: str = ""
    _digest: Optional[str] = field(default=None, repr=False)

    @property
    def untrained(self) -> bool:
        return self.weights == "untrained"

    @property
    def label(self) -> str:
        """Title plus weights, as shown wherever the model is named."""
        suffix = {"imagenet": "ImageNet weights", "untrained": "untrained, random weights"}
        return f"{self.title} · {suffix[self.weights]}" if self.weights in suffix else self.title

    @property
    def is_classifier(self) -> bool:
        shape = _single_output_shape(self.model)
        return shape is not None and len(shape) == 2 and (shape[-1] or 0) >= 2

    @property
    def layers(self) -> list:
        """Every layer in forward order (:class:`vizlib.layers.LayerInfo`), nested models flattened."""
        from vizlib.layers import trace

        return trace(self.model).layers

    def raw_batch(self, images: Any) -> np.ndarray:
        """float32 (N, H, W, C) pixels 0..255 at the model's size, from PIL images or such an array."""
        return raw_batch(images, self.input_size, self.channels)

    def run(self, op: str, batch: Optional[np.ndarray] = None, *, prepared: bool = False, **params: Any) -> dict:
        """Run the operation ``op`` (:mod:`vizlib.ops`) here; ``batch`` is raw pixels unless ``prepared``."""
        from vizlib import ops

        if batch is not None:
            batch = np.asarray(batch, dtype=np.float32)
            if not prepared:
                batch = np.ascontiguousarray(self.preprocess(self.raw_batch(batch)), dtype=np.float32)
        return ops.call(self, op, batch, params)

    def weights_digest(self) -> str:
        """SHA-256 over the weights' shapes and bytes, in layer order (computed once)."""
        if self._digest is None:
            digest = hashlib.sha256()
            for w in self.model.weights:
                arr = np.ascontiguousarray(np.asarray(w.numpy() if hasattr(w, "numpy") else w))
                digest.update(f"{w.path if hasattr(w, 'path') else w.name}:{arr.dtype}:{arr.shape};".encode())
                digest.update(arr.tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def untrained_copy(self, seed: int = 0) -> "LoadedModel":
        """The same architecture with freshly initialised weights, reproducible for ``seed``."""
        import dataclasses

        name = self.key.split(":")[0]
        if name in CATALOGUE and self.weights in ("imagenet", "untrained"):
            return load_catalogue_model(name, None, seed=seed)
        base = self.key.rsplit(":untrained", 1)[0] if self.weights == "untrained" else self.key
        return dataclasses.replace(self, key=f"{base}:untrained:{seed}", model=reinitialise(self.model, seed),
                                   weights="untrained", _digest=None)


def one_image_array(images: Any, want: tuple[int, int, int]) -> bool:
    """Whether ``images`` is an array holding one image of any size (2D, or 3D not of the model's shape)."""
    return isinstance(images, np.ndarray) and (images.ndim == 2 or (images.ndim == 3 and tuple(images.shape) != want))


def checked_batch(images: np.ndarray, want: tuple[int, int, int]) -> np.ndarray:
    """An array at the model's shape ``want`` = (H, W, C), one (H, W, C) or a batch, as float32 (N, H, W, C)."""
    if images.dtype.kind not in "fiub":
        raise InputError(f"Expected a batch of numbers, got an array of {images.dtype}.")
    batch = images.astype(np.float32, copy=False)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
        raise InputError(f"Expected a batch of shape (N, {want[0]}, {want[1]}, {want[2]}), got {batch.shape}.")
    if len(batch) == 0:
        raise InputError("No images given.")
    if not np.isfinite(batch).all():
        raise InputError("The batch holds NaN or infinite values.")
    return batch


def raw_batch(images: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """float32 (N, H, W, C) pixels 0..255 at ``size``: PIL images resized, or an array checked.

    An array is a batch at the model's size, (N, H, W, C) or one (H, W, C); any other 2D or 3D array
    is one image of any size (resized as a PIL image would be).
    """
    want = (size[0], size[1], channels)
    if one_image_array(images, want):
        images = [images]
    if isinstance(images, np.ndarray):
        return checked_batch(images, want)
    from vizlib.images import image_list, to_batch

    images = image_list(images)
    if not images:
        raise InputError("No images given.")
    return to_batch(images, size, channels=channels)


def reinitialise(model: Any, seed: int = 0) -> Any:
    """A copy of a Keras model's architecture with new random weights, reproducible for ``seed``.

    ``keras.models.clone_model`` rebuilds every layer (nested models too) from its
    config, so each gets its initialisers' fresh draw; BatchNormalization starts
    at mean 0, variance 1.
    """
    import keras

    return _seeded(seed, lambda: keras.models.clone_model(model))


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in Keras Applications' output order (shipped, offline)."""
    names = json.loads(IMAGENET_CLASSES_PATH.read_text(encoding="utf-8"))
    return [str(n) for n in names]


def keras_cache_dir() -> Path:
    """The folder ImageNet weights are cached in: ``$KERAS_HOME`` or ``~/.keras`` (see :mod:`vizlib.settings`).

    vizlib passes this folder to Keras explicitly (``cache_dir=``), so the two
    can never disagree about where the weights are.
    """
    return settings().keras_home


def imagenet_weights_cached(name: str) -> bool:
    """True when ``name``'s ImageNet weights are already in the Keras cache (no download needed)."""
    entry = _entry(name)
    return (keras_cache_dir() / "models" / entry.weights_file).is_file()


def network_available(host: str = WEIGHTS_HOST, timeout: float = NETWORK_TIMEOUT, port: int = 443) -> bool:
    """Whether the weights host answers within ``timeout`` seconds (never hangs).

    ``CNN_VIZ_OFFLINE=1`` in the environment says no without asking: for hosts
    that must never download, and for tests that need the offline path.
    """
    if settings().offline:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


ProgressFn = Callable[[int, Optional[int]], None]
_BUILD_LOCK = threading.Lock()


def _entry(name: str) -> CatalogueEntry:
    try:
        return CATALOGUE[name]
    except KeyError:
        known = ", ".join([BUNDLED_NAME, *CATALOGUE])
        raise InputError(f"Unknown model '{name}'. Choose one of: {known}.") from None


#: What to do when ImageNet weights can't be had, in the page's words and in the command line's.
UNTRAINED_ADVICE = "pick 'untrained' weights"
UNTRAINED_ADVICE_CLI = "use --weights untrained"


#: Keras' words when a file names something only code could rebuild (a custom layer or activation, a function).
_CUSTOM_SIGNS = ("could not be deserialized", "could not locate", "unknown layer", "unknown activation",
                 "unknown object", "custom_objects", "lambda", "__lambda__", "register_keras_serializable")


def _custom_parts(text: str) -> str:
    """A plain reason for a model that needs its own code to load ('' when that is not the problem)."""
    low = text.lower()
    if not any(sign in low for sign in _CUSTOM_SIGNS):
        return ""
    return ("it uses a custom layer, activation or function that only its own Python code could rebuild, and "
            "code in a model file is never run here. Save a model built from Keras' own layers and activations.")


def _reason(exc: BaseException) -> str:
    """An OS error's reason without the file name Python puts in its text."""
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__)


def _download(url: str, target: Path, progress: Optional[ProgressFn]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total_n)
        shutil.move(tmp, target)
    except OSError as exc:
        log.warning("downloading %s into %s failed: %s", url, target, exc)  # the server's path stays in the log
        raise InputError(f"Downloading {url} failed ({_reason(exc)}). Try again, or {UNTRAINED_ADVICE}.",
                         cli=f"Downloading {url} failed ({_reason(exc)}). Try again, or {UNTRAINED_ADVICE_CLI}.",
                         ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_imagenet_weights(name: str, progress: Optional[ProgressFn] = None) -> Path:
    """Make sure ``name``'s ImageNet weights are in the Keras cache, downloading them if needed.

    Reports ``progress(bytes_done, bytes_total)``; fails at once with
    :class:`InputError` when the network is out of reach. Used by
    :func:`load_catalogue_model`, by the app (a progress bar before the model
    is built) and by ``python -m vizlib.fetch`` (pre-fetching for an offline event).
    """
    entry = _entry(name)
    target = keras_cache_dir() / "models" / entry.weights_file
    if target.is_file():
        return target
    url = urllib.parse.urlparse(entry.weights_url)
    host = url.hostname or WEIGHTS_HOST
    if not network_available(host, port=url.port or (80 if url.scheme == "http" else 443)):
        log.warning("ImageNet weights for %s not at %s and %s unreachable", entry.title, target, host)
        what = (f"The ImageNet weights for {entry.title} are not in {{}} Keras cache and {host} "
                "can't be reached, so they can't be downloaded.")
        raise InputError(
            what.format("the server's") + " Pick 'untrained' weights or the bundled facial-expression model, "
            "or pre-fetch the weights where there is a network (see the README).",
            cli=what.format("this machine's") + " Use --weights untrained (or --model emotion_cnn), or pre-fetch "
                f"the weights where there is a network: python -m vizlib.fetch {entry.name}",
        )
    _download(entry.weights_url, target, progress)
    return target


def _verified_weights(entry: CatalogueEntry, progress: Optional[ProgressFn]) -> str:
    """The cached weights file, fetched if needed, then found and hash-checked by Keras itself."""
    import keras

    path = fetch_imagenet_weights(entry.name, progress)
    # Keras' public get_file: finds the file in the cache folder we name, checks its
    # hash, and only downloads when the cached copy is missing or corrupt.
    try:
        return keras.utils.get_file(entry.weights_file, entry.weights_url, cache_dir=str(path.parent.parent),
                                    cache_subdir="models", file_hash=entry.weights_hash)
    except Exception as exc:  # a corrupt cached file and no network to replace it
        log.warning("cached ImageNet weights %s failed Keras' integrity check: %s", path, exc)
        what = (f"The cached ImageNet weights for {entry.title} failed Keras' integrity check and could not be "
                f"downloaded again ({type(exc).__name__}).")
        raise InputError(
            f"{what} The host can delete the file ({entry.weights_file}) and fetch it again where there is a "
            f"network; meanwhile {UNTRAINED_ADVICE}.",
            cli=f"{what} Delete {path} and run: python -m vizlib.fetch {entry.name}; or {UNTRAINED_ADVICE_CLI}.",
        ) from exc


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Build a model with Keras' random seed fixed, so untrained weights are reproducible."""
    import keras

    with _BUILD_LOCK:
        keras.utils.set_random_seed(int(seed))
        return build()


def load_catalogue_model(name: str, weights: Optional[str] = "imagenet",
                         progress: Optional[ProgressFn] = None, seed: int = 0) -> LoadedModel:
    """Build a Keras Applications model with ImageNet weights (``"imagenet"``) or untrained (``None``).

    ImageNet weights download on first use into the Keras cache, reporting to
    ``progress(bytes_done, bytes_total)``; with no network this raises
    :class:`InputError` at once instead of hanging. Untrained weights are drawn
    with ``seed``, so the same link shows the same random model.
    """
    entry = _entry(name)
    if weights not in ("imagenet", None, "untrained"):
        raise InputError(f"Weights must be 'imagenet' or None (untrained), not {weights!r}.")
    imagenet = weights == "imagenet"
    if imagenet:
        path = _verified_weights(entry, progress)
        model = entry.build(path)
    else:
        model = _seeded(seed, lambda: entry.build(None))
    return LoadedModel(
        key=f"{name}:imagenet" if imagenet else (f"{name}:untrained" if seed == 0 else f"{name}:untrained:{seed}"),
        title=entry.title,
        model=model,
        input_size=(entry.input_size, entry.input_size),
        channels=3,
        preprocess=entry.preprocess(),
        preprocess_name=f"keras.applications.{entry.module}.preprocess_input",
        weights="imagenet" if imagenet else "untrained",
        class_names=imagenet_class_names(),
        source=f"keras.applications.{entry.constructor}",
    )


def _bundled_keras_model() -> Any:
    import keras

    if BUNDLED_MODEL_PATH.is_file():
        return keras.models.load_model(BUNDLED_MODEL_PATH, compile=False, safe_mode=True)
    return keras.models.load_model(BUNDLED_MODEL_SOURCE, compile=False, safe_mode=True)


def load_bundled_model() -> LoadedModel:
    """The facial-expression CNN shipped in ``assets/models``: works with no network.

    64x64 greyscale face crops scaled to [-1, 1]; softmax over 7 emotions.
    """
    return LoadedModel(
        key=BUNDLED_NAME,
        title=BUNDLED_TITLE,
        model=_bundled_keras_model(),
        input_size=(64, 64),
        channels=1,
        preprocess=_symmetric,
        preprocess_name="x / 127.5 - 1",
        weights="bundled",
        class_names=list(EMOTIONS),
        source="assets/models (fer 25.10.3, MIT)",
    )


def _single_output_shape(model: Any) -> Optional[tuple]:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    return tuple(outputs[0].shape)


def describe_keras_model(model: Any, *, key: Optional[str] = None, title: Optional[str] = None,
                         preprocess: str | Preprocess = AUTO, class_names: Optional[list[str]] = None,
                         weights: str = "in-memory", source: str = "") -> LoadedModel:
    """Wrap any single-input image ``keras.Model`` so vizlib can feed it.

    The input size and channel count come from the model's input shape (224x224
    where it leaves them open); ``preprocess`` is a name from
    :data:`PREPROCESSING`, :data:`AUTO` (``"raw"`` for a model that rescales
    its input itself, else ``"unit"``) or your own function of a float32
    (N, H, W, C) batch in 0..255.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"Expected a keras.Model, got {type(model).__name__}.")
    h, w, c = image_input(model)
    preprocess = resolve_scaling(model, preprocess)
    if isinstance(preprocess, str):
        if preprocess not in PREPROCESSING:
            raise InputError(f"Unknown preprocessing '{preprocess}'. Choose one of: {', '.join([AUTO, *PREPROCESSING])}.")
        pre_name, pre_fn = preprocess, PREPROCESSING[preprocess][1]
    else:
        pre_name, pre_fn = getattr(preprocess, "__name__", "custom"), preprocess
    out_shape = _single_output_shape(model)
    if class_names is None and out_shape and len(out_shape) == 2:
        n = out_shape[-1]
        if n == 1000:
            class_names = imagenet_class_names()
        elif n == len(EMOTIONS) and c == 1:
            class_names = list(EMOTIONS)
    return LoadedModel(
        key=key or f"in-memory:{id(model)}:{model.name}",
        title=title or model.name,
        model=model,
        input_size=(h, w),
        channels=int(c),
        preprocess=pre_fn,
        preprocess_name=pre_name,
        weights=weights,
        class_names=class_names,
        source=source,
    )


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def load_model_file(path: str | Path, *, preprocess: str | Preprocess = AUTO,
                    check: bool = True, title: Optional[str] = None) -> LoadedModel:
    """Load a ``.keras`` or ``.h5`` model file with ``safe_mode=True`` and ``compile=False``.

    The file is first inspected without deserialising anything
    (:func:`vizlib.modelcheck.check_model_file`): only built-in Keras layers, sane
    sizes. Anything refused raises :class:`InputError` with the reason.
    """
    path = Path(path)
    if not path.is_file():
        log.info("no model file at %s", path)
        raise InputError(f"No model file named '{path.name}' there: check the path.")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"'{path.name}' is not a Keras model file: use a .keras or .h5 file.")
    if check:
        from vizlib.modelcheck import check_model_file

        check_model_file(path)
    import keras

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except InputError:
        raise
    except RecursionError as exc:  # a chain of layers longer than Python's stack (modelcheck caps the depth)
        from vizlib.modelcheck.rules import too_deep

        raise too_deep(title or path.name) from exc
    except Exception as exc:  # Keras raises many types for a bad file; all are the user's file.
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.info("keras could not load %s: %s", path, exc)
        reason = _custom_parts(str(exc)) or hide_paths(reason, path)
        raise InputError(f"Keras could not load '{title or path.name}': {reason}") from exc
    preprocess = resolve_scaling(model, preprocess)  # keyed by the scaling applied: "unit" caches stay valid
    return describe_keras_model(
        model, key=f"file:{file_sha256(path)}:{preprocess if isinstance(preprocess, str) else 'custom'}",
        title=title or path.name, preprocess=preprocess, weights="file", source=str(path.name),
    )


def load_model(model: Any, weights: Optional[str] = "imagenet", **kwargs: Any) -> LoadedModel:
    """One entry point: a catalogue name, a ``.keras``/``.h5`` path, or a ``keras.Model`` you have.

    ``weights``: ``"imagenet"`` (the default: for catalogue names, downloaded on
    first use; for the bundled model and files, their own weights) or ``None``
    for the same architecture untrained, randomly initialised (seed 0).
    """
    from vizlib.contract import VizModel

    if weights not in ("imagenet", "untrained", None):
        raise InputError(f"weights must be 'imagenet' (the model's own trained weights) or None / 'untrained' "
                         f"(the same architecture, randomly initialised), not {weights!r}.")
    if isinstance(model, VizModel):
        return model if weights not in (None, "untrained") or model.untrained else model.untrained_copy(0)
    if isinstance(model, (str, Path)):
        text = str(model)
        if text == BUNDLED_NAME:
            bundled = load_bundled_model()
            return bundled.untrained_copy(0) if weights in (None, "untrained") else bundled
        if text in CATALOGUE:
            return load_catalogue_model(text, weights, progress=kwargs.get("progress"))
        if Path(text).suffix.lower() in (".keras", ".h5", ".hdf5"):
            loaded = load_model_file(text, **{k: v for k, v in kwargs.items() if k in ("preprocess", "check", "title")})
            return loaded.untrained_copy(0) if weights in (None, "untrained") else loaded
        known = ", ".join([BUNDLED_NAME, *CATALOGUE])
        raise InputError(f"Unknown model '{text}'. Use one of {known}, or a path to a .keras or .h5 file.")
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"A model must be a catalogue name ({BUNDLED_NAME}, {', '.join(CATALOGUE)}), a path to a "
                         f".keras or .h5 file, or a keras.Model -- not a {type(model).__name__}.")
    loaded = describe_keras_model(model, **kwargs)
    return loaded.untrained_copy(0) if weights in (None, "untrained") else loaded
