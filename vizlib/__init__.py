"""vizlib: see what each layer of a Keras CNN responds to in an image.

Everything the dashboard draws is one call away in a notebook::

    import vizlib
    m = vizlib.load_model("vgg16")                 # or a .keras/.h5 path, or your keras.Model
    img = vizlib.load_image("photo.jpg")
    acts = vizlib.activations(m, [img], ["block1_conv1", "block5_conv3"])
    vizlib.channel_grid(acts["block1_conv1"][0]).show()

Keras and TensorFlow are imported on first use, not on ``import vizlib``.

Importing vizlib before TensorFlow turns TensorFlow's oneDNN kernels off
(``TF_ENABLE_ONEDNN_OPTS=0``) unless you chose otherwise: with TensorFlow 2.21
on CPU and oneDNN on, some input gradients (a 1x1 stride-2 convolution on an
even-sized input, as in the bundled model) corrupt the heap and abort the
process. Forward passes cost about the same either way (benchmarks/README.md).
That process set-up lives in :mod:`vizlib.tfsetup`.
"""

from vizlib import tfsetup as _tfsetup  # noqa: F401  (oneDNN off before TensorFlow loads: vizlib/tfsetup.py)
from vizlib.errors import InputError
from vizlib.images import image_digest, load_image, load_images, load_sample, SAMPLES, to_batch
from vizlib.models import CATALOGUE, LoadedModel, load_model, imagenet_weights_cached
from vizlib.contract import VizModel, as_model
from vizlib.layers import LayerInfo, all_layers, spatial_layers, first_conv, last_conv, find_layer, layer_table
from vizlib.extract import (
    activations, forward, predict, channel_across_images, channel_stats, top_channels, pick_channels,
)
from vizlib.figures import channel_grid, channel_detail, across_images, prediction_bars
from vizlib.explain import (
    ClassExplanation, GradientsUnsafe, channel_contributions, conv_arithmetic, depth_profile, explain_class,
    gradcam, gradcam_method, receptive_field, receptive_field_info,
)
from vizlib.featvis import feature_visualization
from vizlib.graph import (
    LayerGraph, collapse, graph_figure, graph_layout, graph_png, graph_svg, kernel_figure, kernel_pixels, kernel_png,
    kernels, layer_graph,
)
# The function shadows the package's name on ``vizlib``: import the package's parts with
# ``from vizlib.attribution import ...``.
from vizlib.attribution import attribution, faithfulness
from vizlib.explain_figures import (
    contributions_bar, conv_arithmetic_figure, depth_profile_figure, gradcam_overlay, gradcam_pair,
    receptive_field_figure,
)

__version__ = "0.2.0"


def untrained(model: object, seed: int = 0) -> VizModel:
    """The same architecture as ``model`` with randomly initialised weights (reproducible for ``seed``).

    ``model`` is anything :func:`load_model` accepts or returns: the bundled
    model, a catalogue model, a model file, your ``keras.Model``, or an uploaded
    model running in its own process.
    """
    return as_model(model).untrained_copy(int(seed))

__all__ = [
    "InputError", "load_image", "load_images", "load_sample", "SAMPLES", "image_digest", "to_batch",
    "CATALOGUE", "LoadedModel", "load_model", "imagenet_weights_cached", "VizModel", "as_model", "untrained",
    "LayerInfo", "all_layers", "spatial_layers", "first_conv", "last_conv", "find_layer", "layer_table",
    "activations", "forward", "predict", "channel_across_images", "channel_stats", "top_channels",
    "pick_channels", "channel_grid", "channel_detail", "across_images", "prediction_bars",
    "gradcam", "gradcam_method", "explain_class", "ClassExplanation", "channel_contributions", "receptive_field",
    "receptive_field_info", "depth_profile", "conv_arithmetic", "GradientsUnsafe",
    "gradcam_overlay", "gradcam_pair", "contributions_bar", "receptive_field_figure", "conv_arithmetic_figure",
    "depth_profile_figure", "feature_visualization",
    "LayerGraph", "layer_graph", "collapse", "graph_layout", "graph_figure", "graph_svg", "graph_png", "kernels",
    "kernel_pixels", "kernel_figure", "kernel_png", "attribution", "faithfulness",
]

# Every public function checks its arguments' types first: a wrong type is an InputError naming it.
from vizlib.arguments import check_namespace as _check_namespace  # noqa: E402

_check_namespace(globals())
