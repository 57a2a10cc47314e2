"""The limits an uploaded model file is held to, and the wording of its refusals.

Every cap of :mod:`vizlib.modelcheck` is here, so a host can read (or a test change) them in one place.
"""

from __future__ import annotations

from vizlib.errors import InputError

MiB = 2**20

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_LOCAL_MAGIC = b"PK\x03\x04"

KERAS_EXTENSIONS = (".keras",)
H5_EXTENSIONS = (".h5", ".hdf5")

#: The members a Keras 3 ``.keras`` archive must contain, each exactly once.
KERAS_ARCHIVE_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})

MAX_METADATA_BYTES = 64 * 1024
MAX_CONFIG_BYTES = 16 * MiB
#: Members above this size must not expand more than ``max_ratio`` times.
RATIO_FLOOR_BYTES = 1 * MiB
MAX_CENTRAL_DIRECTORY_BYTES = 1 * MiB
MAX_CONFIG_DEPTH = 200
#: Layers in a model, counting those inside nested models (and the nested models themselves).
#: The largest Keras Applications model (NASNetLarge) has ~1,040; loading costs ~2 ms a layer.
MAX_LAYERS = 2000
#: Layers of one Sequential: loading a Sequential rebuilds it after every layer it adds, so its
#: load time grows with the square of its length (measured: 100 layers 3 s, 150 layers 7 s,
#: 400 layers 72 s; functional models load 800 layers in 1.6 s).
MAX_SEQUENTIAL_LAYERS = 150
#: ... and the sum of the squares of all Sequentials' lengths (two nested 150-layer Sequentials
#: would cost twice one).
MAX_SEQUENTIAL_COST = MAX_SEQUENTIAL_LAYERS**2
#: Models inside models (a Sequential holding a Functional holding a Sequential is 3 deep).
MAX_MODEL_NESTING = 8
MAX_HDF5_OBJECTS = 200_000

#: Caps on single hyper-parameters (defence in depth; real CNNs are far below).
MAX_UNITS = 2**17  # Dense units, Conv filters, projection dims
MAX_KERNEL_ELEMENTS = 2**12  # product of kernel_size
MAX_DEPTH_MULTIPLIER = 2**10
MAX_HEADS = 2**10
MAX_UPSAMPLING = 256  # product of UpSampling size / transposed-conv strides
MAX_PADDING = 4096
MAX_RESIZE_SIDE = 8192
MAX_DIM = 2**31  # any single tensor dimension
#: Largest kernel, stride, pool or dilation on one axis (vizlib.receptive.MAX_WINDOW: the same bound).
MAX_WINDOW = 4096
#: How deep Keras may recurse while rebuilding a model's graph (its depth-first walk from the outputs,
#: see vizlib.modelcheck.audit.load_depth). Python's default stack gives out at ~985 levels (measured:
#: a chain of 960 layers loads, 1,000 fails with RecursionError); Keras Applications models need at
#: most a few hundred (benchmarks/README.md, "Hostile inputs, round 3").
MAX_MODEL_DEPTH = 800

UNCHANGED = "Upload the file written by model.save('model.keras') unchanged."
LOCAL_HINT = (
    "or run the dashboard locally and pass your model to vizlib as a keras.Model"
)


def in_layer(where: str | None) -> str:
    return f" (in '{where}')" if where else ""


def damaged(name: str, why: str) -> InputError:
    return InputError(
        f"'{name}' is not a usable Keras model file: {why}. Upload the file written by "
        "model.save('model.keras') (or a legacy .h5 model) unchanged."
    )


def not_a_model(name: str, why: str) -> InputError:
    return InputError(
        f"'{name}' is not a Keras model file: {why}. Upload the file written by "
        "model.save('model.keras')."
    )




def too_deep(name: str, depth: int | None = None) -> InputError:
    """The refusal of a model whose chain of layers is too long for Keras to load (``depth`` if known)."""
    what = (f"chains {depth:,} layers one after another" if depth is not None
            else "chains too many layers one after another")
    return InputError(
        f"'{name}' {what}. Keras loads a model by recursing along its chains of layers, and more than "
        f"{MAX_MODEL_DEPTH:,} in a row exhaust Python's call stack, so it cannot be loaded here. "
        f"Rebuild it with fewer layers in a row (real CNNs have a few hundred), {LOCAL_HINT}."
    )
