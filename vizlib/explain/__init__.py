"""Why this prediction? Grad-CAM, channel contributions, receptive fields, the depth profile.

The questions people bring to a CNN after "what does each layer respond to":

* **Where did the model look for a class?** :func:`gradcam` (Grad-CAM at the
  final feature map, LayerCAM at earlier layers, where Grad-CAM's channel
  averages stop meaning much; :func:`gradcam_method` says which is used).
* **Which channels carried the decision?** :func:`channel_contributions`:
  the mean of gradient x activation per channel, ranked.
* **What does one cell of a map see?** :func:`receptive_field`, from the
  layer graph (kernels, strides, "same" padding offsets, dilation, pooling,
  branches and nested models), and for the first convolution the arithmetic
  that made one value (:func:`conv_arithmetic`).
* **What does each layer see, over the whole depth?** :func:`depth_profile`:
  size, channels, receptive field, dead channels, mean and sparsity for every
  spatial layer, from one forward pass.

Every computation is an operation (:mod:`vizlib.ops`) on the Keras model, so it
runs in this process for an in-process model and in the child process of an
uploaded model; the public functions take anything :func:`vizlib.load_model`
accepts or returns.

**Reusing work when only the class changes.** Grad-CAM for a layer ``L`` needs
the forward pass up to ``L`` (the same for every class) and a backward pass
from the class score to ``L`` (per class). The model is split at ``L`` into a
*trunk* (input -> L's output, plus any tensor that bypasses ``L``, e.g. a
residual shortcut) and a *head* (those tensors -> the class scores). The
trunk's outputs are cached per (layer, image), so switching the class reruns
only the head and its gradient, never the convolutional trunk.

The package has one module per job: :mod:`~vizlib.explain.safety` (when
gradients are safe), :mod:`~vizlib.explain.cam` (class score, trunk + head,
Grad-CAM / LayerCAM), :mod:`~vizlib.explain.geometry` (receptive fields, from
:mod:`vizlib.receptive`), :mod:`~vizlib.explain.profile` (depth profile),
:mod:`~vizlib.explain.arithmetic` (one convolution by hand) and
:mod:`~vizlib.explain.api` (the calls below); every public name is importable
from ``vizlib.explain``.

**Gradients on TensorFlow 2.21 / CPU.** With oneDNN on, some input gradients
corrupt the heap and abort the process; vizlib turns oneDNN off when it is
imported before TensorFlow. If TensorFlow was imported first with oneDNN on,
gradient functions here refuse to run (:class:`GradientsUnsafe`) rather than
risk the process.
"""


from __future__ import annotations

from vizlib.explain.safety import GradientsUnsafe, check_gradients_safe, onednn_enabled
from vizlib.explain.cam import (
    MAX_CACHED_FEATURE_BYTES, MAX_CACHED_FEATURES, MAX_PLANS_PER_MODEL, METHOD_TITLES, METHODS, class_probabilities,
    probability_missing,
    class_scores, final_feature_map_name, layer_features, resize_maps,
)
from vizlib.explain.profile import PROFILE_STATS
from vizlib.explain.arithmetic import input_channel_order
from vizlib.explain import geometry as _geometry  # noqa: F401 - registers the receptive-field operation
from vizlib.explain.api import (
    ClassExplanation, channel_contributions, conv_arithmetic, depth_profile, explain_class, final_layer, gradcam,
    gradcam_method, model_view_array, receptive_field, receptive_field_info,
)

__all__ = [
    "ClassExplanation", "GradientsUnsafe", "MAX_CACHED_FEATURES", "MAX_CACHED_FEATURE_BYTES", "MAX_PLANS_PER_MODEL",
    "METHODS", "METHOD_TITLES", "PROFILE_STATS", "channel_contributions", "check_gradients_safe",
    "class_probabilities", "class_scores", "probability_missing", "conv_arithmetic", "depth_profile", "explain_class",
    "final_feature_map_name", "final_layer", "gradcam", "gradcam_method", "input_channel_order", "layer_features",
    "model_view_array", "onednn_enabled", "receptive_field", "receptive_field_info", "resize_maps",
]
