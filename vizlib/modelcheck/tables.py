"""The tables :mod:`vizlib.modelcheck` audits an uploaded model's config against.

Which Keras classes, functions, ``keras.ops`` operations, optimizers, losses
and metrics an uploaded model may name, which it may not (and why, in words
for the page), which layers carry weights (and how their size is estimated),
and which HDF5 filters may be used. Data only: the audit is in
:mod:`vizlib.modelcheck.audit`.
"""

from __future__ import annotations

_PUBLIC_LAYERS = frozenset(
    {
        # convolution
        "Conv1D", "Conv2D", "Conv3D",
        "Convolution1D", "Convolution2D", "Convolution3D",
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "Convolution2DTranspose",
        "SeparableConv1D", "SeparableConv2D", "SeparableConvolution2D",
        "DepthwiseConv1D", "DepthwiseConv2D",
        # core
        "Dense", "Activation", "Identity", "InputLayer",
        "Flatten", "Reshape", "Permute", "RepeatVector",
        # regularisation
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
        # normalisation
        "BatchNormalization", "LayerNormalization", "GroupNormalization",
        "UnitNormalization",
        # activations
        "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
        # pooling
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "MaxPool1D", "MaxPool2D", "MaxPool3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
        "AvgPool1D", "AvgPool2D", "AvgPool3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D",
        # reshaping
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
        "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D",
        # merging
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
        "Concatenate",
        # attention (plain tensor maths; no code, no files)
        "MultiHeadAttention",
        # image preprocessing baked into real models
        "Rescaling", "Normalization", "Resizing", "CenterCrop",
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
        "RandomContrast", "RandomCrop", "RandomBrightness",
    }
)

_INITIALIZERS = frozenset(
    {
        "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform",
        "Identity", "IdentityInitializer", "LecunNormal", "LecunUniform",
        "Ones", "Orthogonal", "OrthogonalInitializer", "RandomNormal",
        "RandomUniform", "TruncatedNormal", "VarianceScaling", "Zeros",
    }
)
_REGULARIZERS = frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"})
_CONSTRAINTS = frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"})
_DTYPE_POLICIES = frozenset({"DTypePolicy", "FloatDTypePolicy"})
MODELS = frozenset({"Functional", "Sequential", "Model"})

#: Classes defined inside Keras (not exported under ``keras.layers``) that the
#: Keras Applications serialise with their internal module path.  Each was
#: read: plain tensor maths, no code, no file access.
_KERAS_INTERNAL_CLASSES = frozenset(
    {
        # ConvNeXt*: gamma * x, and drop-path (only when drop_path_rate > 0)
        ("keras.src.applications.convnext", "LayerScale"),
        ("keras.src.applications.convnext", "StochasticDepth"),
        # InceptionResNetV2: inputs[0] + inputs[1] * scale
        ("keras.src.applications.inception_resnet_v2", "CustomScaleLayer"),
        # Functional models serialise under their implementation module.
        ("keras.src.models.functional", "Functional"),
        ("keras.src.models.sequential", "Sequential"),
        ("keras.src.models.model", "Model"),
    }
)

#: ``keras.ops`` applied to symbolic tensors in a functional model are saved
#: as Operation objects (e.g. ConvNeXt's and MobileNetV3's residual ``x + y`` is
#: ``keras.src.ops.numpy.Add``).  Only element-wise maths, reductions and
#: shape shuffles that cannot enlarge a tensor are accepted (no Tile, Repeat,
#: BroadcastTo, Full, Einsum, control flow or anything taking a function).
_KERAS_OPS = {
    "keras.src.ops.numpy": frozenset(
        {
            "Abs", "Absolute", "Add", "Subtract", "Multiply", "Divide",
            "TrueDivide", "Negative", "Square", "Sqrt", "Exp", "Log", "Log1p",
            "Power", "Maximum", "Minimum", "Clip", "Tanh", "Sign", "Floor",
            "Ceil", "Round", "Reciprocal", "Where",
            "Mean", "Max", "Min", "Sum", "Prod", "Std", "Var", "Argmax", "Argmin",
            "Concatenate", "Stack", "Reshape", "Transpose", "ExpandDims",
            "Squeeze", "Moveaxis", "Swapaxes", "Ravel", "Flip", "GetItem",
            "Matmul",
        }
    ),
    "keras.src.ops.nn": frozenset(
        {
            "Relu", "Relu6", "Sigmoid", "Softmax", "LogSoftmax", "Gelu", "Silu",
            "Elu", "Selu", "LeakyRelu", "HardSigmoid", "HardSilu", "Softplus",
            "Softsign", "LogSigmoid", "Glu",
        }
    ),
    "keras.src.ops.core": frozenset({"Cast"}),
}


def _build_allowed() -> frozenset[tuple[str, str]]:
    allowed: set[tuple[str, str]] = set()
    allowed |= {("keras.layers", name) for name in _PUBLIC_LAYERS}
    allowed |= {("keras.initializers", name) for name in _INITIALIZERS}
    allowed |= {("keras.regularizers", name) for name in _REGULARIZERS}
    allowed |= {("keras.constraints", name) for name in _CONSTRAINTS}
    for module in ("keras", "keras.dtype_policies"):
        allowed |= {(module, name) for name in _DTYPE_POLICIES}
    for module in ("keras", "keras.models"):
        allowed |= {(module, name) for name in MODELS}
    allowed |= _KERAS_INTERNAL_CLASSES
    for module, names in _KERAS_OPS.items():
        allowed |= {(module, name) for name in names}
    return frozenset(allowed)


#: Every Keras object an uploaded model's config may name, as
#: ``(module, class_name)`` pairs exactly as Keras 3 writes them into
#: ``config.json``: built-in layers under ``keras.layers`` (convolution, dense,
#: pooling, normalisation, activation, merging, reshaping, image preprocessing,
#: MultiHeadAttention), initializers, regularizers, constraints, dtype
#: policies, the model classes (``Functional``, ``Sequential``, ``Model``), the
#: three Keras Applications internals ``LayerScale``, ``StochasticDepth``
#: (ConvNeXt) and ``CustomScaleLayer`` (InceptionResNetV2), and a short list
#: of side-effect-free ``keras.ops`` operations.  A matching object must also
#: have an empty ``registered_name`` or one equal to its class name.
#:
#: Deliberately absent: ``Lambda`` (marshalled bytecode), ``TFSMLayer`` (loads
#: a SavedModel from a path), ``StringLookup``/``IntegerLookup``/
#: ``TextVectorization``/``Hashing`` (vocabulary files), the JAX/Flax/Torch
#: wrappers, recurrent layers and wrappers, and anything outside Keras.
#: Legacy ``.h5`` configs carry bare class names; there the names of the
#: public (non-``keras.src``) entries are accepted.
ALLOWED_CLASSES: frozenset[tuple[str, str]] = _build_allowed()

#: Bare class names accepted where a config gives no module (legacy ``.h5``).
#: ``Policy`` is TF-Keras' mixed-precision policy object.
BARE_NAMES = frozenset(
    name for module, name in ALLOWED_CLASSES if not module.startswith("keras.src.")
) | {"Policy"}

#: Objects allowed only inside ``compile_config`` / ``training_config``
#: (optimizer, losses, metrics), which Keras deserialises only when loading
#: with ``compile=True``.
_COMPILE_MODULE_CLASSES = {
    "keras.optimizers": frozenset(
        {
            "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl",
            "Lamb", "Lion", "LossScaleOptimizer", "Nadam", "RMSprop", "SGD",
        }
    ),
    "keras.optimizers.schedules": frozenset(
        {
            "CosineDecay", "CosineDecayRestarts", "ExponentialDecay",
            "InverseTimeDecay", "PiecewiseConstantDecay", "PolynomialDecay",
        }
    ),
    "keras.losses": frozenset(
        {
            "BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy",
            "CategoricalFocalCrossentropy", "CategoricalHinge", "CosineSimilarity",
            "Dice", "Hinge", "Huber", "KLDivergence", "LogCosh", "MeanAbsoluteError",
            "MeanAbsolutePercentageError", "MeanSquaredError",
            "MeanSquaredLogarithmicError", "Poisson", "SparseCategoricalCrossentropy",
            "SquaredHinge", "Tversky",
        }
    ),
    "keras.metrics": frozenset(
        {
            "AUC", "Accuracy", "BinaryAccuracy", "BinaryCrossentropy", "BinaryIoU",
            "CategoricalAccuracy", "CategoricalCrossentropy", "CategoricalHinge",
            "CosineSimilarity", "F1Score", "FBetaScore", "FalseNegatives",
            "FalsePositives", "Hinge", "IoU", "KLDivergence", "LogCoshError", "Mean",
            "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanIoU",
            "MeanMetricWrapper", "MeanSquaredError", "MeanSquaredLogarithmicError",
            "OneHotIoU", "OneHotMeanIoU", "Poisson", "Precision", "PrecisionAtRecall",
            "R2Score", "Recall", "RecallAtPrecision", "RootMeanSquaredError",
            "SensitivityAtSpecificity", "SparseCategoricalAccuracy",
            "SparseCategoricalCrossentropy", "SparseTopKCategoricalAccuracy",
            "SpecificityAtSensitivity", "SquaredHinge", "Sum",
            "TopKCategoricalAccuracy", "TrueNegatives", "TruePositives",
        }
    ),
}
COMPILE_CLASSES = frozenset(
    (module, name) for module, names in _COMPILE_MODULE_CLASSES.items() for name in names
)
COMPILE_BARE_NAMES = frozenset(name for _, name in COMPILE_CLASSES) | {
    # TF-Keras / Keras 2 spellings seen in legacy training configs
    "MeanMetricWrapper", "SGD", "RMSprop", "Adam", "Adagrad", "Adadelta", "Adamax",
    "Nadam", "Custom>Adam",
}

#: Keras' built-in activation names; Keras 3 writes a function-valued
#: activation as ``{"module": "builtins", "class_name": "function",
#: "config": "<name>"}`` and resolves it inside ``keras.activations`` only.
ACTIVATION_NAMES = frozenset(
    {
        "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid",
        "hard_silu", "hard_swish", "hard_tanh", "leaky_relu", "linear",
        "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu", "sigmoid",
        "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus",
        "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
        "tanh_shrink", "threshold",
    }
)
LOSS_METRIC_FUNCTIONS = frozenset(
    {
        "binary_accuracy", "binary_crossentropy", "binary_focal_crossentropy",
        "categorical_accuracy", "categorical_crossentropy",
        "categorical_focal_crossentropy", "categorical_hinge", "cosine_similarity",
        "hinge", "huber", "kl_divergence", "log_cosh", "mean_absolute_error",
        "mean_absolute_percentage_error", "mean_squared_error",
        "mean_squared_logarithmic_error", "poisson", "sparse_categorical_accuracy",
        "sparse_categorical_crossentropy", "sparse_top_k_categorical_accuracy",
        "squared_hinge", "top_k_categorical_accuracy",
    }
)
FUNCTION_MODULES = frozenset(
    {"builtins", "keras.activations", "keras.losses", "keras.metrics"}
)

#: Serialisation markers that only carry data (tensors, slices, bytes); the
#: last two are legacy (TF-Keras JSON) spellings of a tuple and a shape.
DATA_MARKERS = frozenset(
    {
        "__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__",
        "__slice__", "__tuple__", "TensorShape",
    }
)


#: Classes refused with a specific explanation, whatever module they claim.
REFUSED_CLASSES = {
    "Lambda": "a Lambda layer{where}, which holds Python code",
    "TFOpLambda": "a TensorFlow-op Lambda layer{where} (TF-Keras 'TFOpLambda'), which calls arbitrary TensorFlow functions",
    "SlicingOpLambda": "a TensorFlow-op Lambda layer{where} (TF-Keras 'SlicingOpLambda'), which calls arbitrary TensorFlow functions",
    "TFSMLayer": "a TFSMLayer{where}, which loads a TensorFlow SavedModel (a program) from a path on the server",
    "StringLookup": "a StringLookup layer{where}, which can read its vocabulary from a file on the server",
    "IntegerLookup": "an IntegerLookup layer{where}, which can read its vocabulary from a file on the server",
    "TextVectorization": "a TextVectorization layer{where}, which can read its vocabulary from a file on the server",
    "Hashing": "a Hashing layer{where}, which this dashboard does not accept",
    "HashedCrossing": "a HashedCrossing layer{where}, which this dashboard does not accept",
    "TorchModuleWrapper": "a TorchModuleWrapper{where}, which holds a pickled PyTorch module (Python code)",
    "JaxLayer": "a JaxLayer{where}, which holds Python code",
    "FlaxLayer": "a FlaxLayer{where}, which holds Python code",
}


# Weighted layers: (class_name) -> estimator kind.
CONV = {
    "Conv1D": 1, "Conv2D": 2, "Conv3D": 3,
    "Convolution1D": 1, "Convolution2D": 2, "Convolution3D": 3,
}
CONV_T = {
    "Conv1DTranspose": 1, "Conv2DTranspose": 2, "Conv3DTranspose": 3,
    "Convolution2DTranspose": 2,
}
SEPARABLE = {"SeparableConv1D": 1, "SeparableConv2D": 2, "SeparableConvolution2D": 2}
DEPTHWISE = {"DepthwiseConv1D": 1, "DepthwiseConv2D": 2}
WEIGHTED = (
    set(CONV) | set(CONV_T) | set(SEPARABLE) | set(DEPTHWISE)
    | {
        "Dense", "BatchNormalization", "LayerNormalization", "GroupNormalization",
        "PReLU", "Normalization", "MultiHeadAttention", "LayerScale",
    }
)

# Allowed HDF5 filters: deflate, shuffle, fletcher32, szip, nbit, scaleoffset,
# lzf.  Any other filter id makes HDF5 look for a plugin shared library.
HDF5_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
