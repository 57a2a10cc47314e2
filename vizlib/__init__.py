"""vizlib: see what each layer of a Keras CNN responds to in an image.

Everything the dashboard draws is one call away in a notebook::

    import vizlib
    m = vizlib.load_model("vgg16")                 # or a .keras/.h5 path, or your keras.Model
    img = vizlib.load_image("photo.jpg")
    acts = vizlib.activations(m, [img], ["block1_conv1", "block5_conv3"])
    vizlib.channel_grid(acts["block1_conv1"][0]).show()

Keras and TensorFlow are imported on first use, not on ``import vizlib``.
"""

from vizlib.errors import InputError
from vizlib.images import image_digest, load_image, load_images, load_sample, SAMPLES, to_batch
from vizlib.models import CATALOGUE, LoadedModel, load_model, imagenet_weights_cached
from vizlib.layers import LayerInfo, all_layers, spatial_layers, first_conv, last_conv, find_layer, layer_table
from vizlib.activations import (
    activations, forward, predict, channel_across_images, channel_stats, top_channels, pick_channels,
)
from vizlib.figures import channel_grid, channel_detail, across_images, prediction_bars

__version__ = "0.1.0"

__all__ = [
    "InputError", "load_image", "load_images", "load_sample", "SAMPLES", "image_digest", "to_batch",
    "CATALOGUE", "LoadedModel", "load_model", "imagenet_weights_cached",
    "LayerInfo", "all_layers", "spatial_layers", "first_conv", "last_conv", "find_layer", "layer_table",
    "activations", "forward", "predict", "channel_across_images", "channel_stats", "top_channels",
    "pick_channels", "channel_grid", "channel_detail", "across_images", "prediction_bars",
]
