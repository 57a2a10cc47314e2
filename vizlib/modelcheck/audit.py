"""The config audit: every object a model config names is matched against the allowlist, and its size bounded.

Iterative walks (a deeply nested config cannot exhaust Python's stack); JSON read by the one bounded
reader (:func:`vizlib.schema.parse_json`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from vizlib import schema
from vizlib.errors import InputError
from vizlib.modelcheck.rules import (LOCAL_HINT, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_LAYERS, MAX_MODEL_DEPTH,
                                     MAX_MODEL_NESTING, MAX_SEQUENTIAL_COST, MAX_SEQUENTIAL_LAYERS, UNCHANGED, damaged,
                                     in_layer, too_deep)
from vizlib.modelcheck.sizes import (build_input_shape, check_geometry, check_hyperparameters, dtype_name,
                                     estimate_params, valid_shape)
from vizlib.modelcheck.tables import (ACTIVATION_NAMES, ALLOWED_CLASSES, BARE_NAMES, COMPILE_BARE_NAMES, COMPILE_CLASSES,
                                      DATA_MARKERS, FUNCTION_MODULES, LOSS_METRIC_FUNCTIONS, MODELS, REFUSED_CLASSES,
                                      WEIGHTED)
from vizlib.units import fmt_bytes

_SAFE_MODE_KEY = re.compile(r"safe_?mode|unsafe", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")




class ConfigAudit:
    """Walks a parsed config, refusing anything not on the allowlist."""

    def __init__(self, file_name: str, *, legacy: bool, max_weight_bytes: int,
                 max_input_elements: int):
        self.file_name = file_name
        self.legacy = legacy
        self.max_weight_bytes = max_weight_bytes
        self.max_input_elements = max_input_elements
        self.class_names: set[str] = set()
        self.n_layers = 0
        self.sequential_cost = 0
        self.estimated_bytes = 0
        self.input_shapes: list[tuple[int | None, ...]] = []
        self.compiled = False
        self.depth = 0

    # -- entry points -----------------------------------------------------

    def run_model(self, config: Any) -> None:
        if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
            raise damaged(self.file_name, "its model description is not a Keras model config")
        top = config["class_name"]
        if top not in MODELS:
            raise InputError(
                f"'{self.file_name}' describes a '{top[:80]}', not a model. Upload a file "
                "written by model.save() for a keras.Model or keras.Sequential."
            )
        self._walk(config, in_compile=False)
        self.depth = load_depth(config)
        if self.depth > MAX_MODEL_DEPTH:
            raise too_deep(self.file_name, self.depth)

    def run_compile(self, training_config: Any) -> None:
        self._walk(training_config, in_compile=True, owner=None)
        self.compiled = True

    # -- traversal --------------------------------------------------------

    def _walk(self, root: Any, *, in_compile: bool, owner: str | None = None) -> None:
        # Iterative, so a deeply nested config cannot exhaust Python's stack.
        # Each entry: (node, depth, compiling, owner, is_layer, models it is inside).
        stack: list[tuple[Any, int, bool, str | None, bool, int]] = [
            (root, 0, in_compile, owner, False, 0)
        ]
        while stack:
            node, depth, compiling, owner, is_layer, models = stack.pop()
            if depth > MAX_CONFIG_DEPTH:
                raise damaged(self.file_name, "its model description is nested too deeply")
            if isinstance(node, list):
                for item in node:
                    stack.append((item, depth + 1, compiling, owner, is_layer, models))
                continue
            if not isinstance(node, dict):
                continue
            for key in node:
                if _SAFE_MODE_KEY.search(key):
                    raise self._safe_mode_error(owner)
            if "class_name" in node:
                owner = self._check_object(node, compiling, owner)
                if is_layer:
                    self.n_layers += 1
                    if self.n_layers > MAX_LAYERS:
                        raise self._too_many_layers()
                if not compiling and node.get("class_name") in MODELS:
                    models += 1
                    self._check_model_shape(node, models, owner)
            for key, value in node.items():
                if key == "compile_config" and value:
                    self.compiled = True
                child_compiling = compiling or key in ("compile_config", "training_config")
                child_is_layer = key == "layers" or (
                    key == "config" and node.get("class_name") == "Sequential"
                    and isinstance(value, list)
                )
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, child_compiling, owner, child_is_layer, models))
            # Plain strings (activation names, padding modes, ...) are resolved by
            # Keras against its own tables only, so they need no check here.

    # -- model structure (what loading costs) ------------------------------

    def _check_model_shape(self, node: dict, models: int, where: str | None) -> None:
        """Bound nesting and Sequential lengths before Keras rebuilds anything."""
        if models > MAX_MODEL_NESTING:
            raise InputError(
                f"'{self.file_name}' nests models more than {MAX_MODEL_NESTING} deep (a model inside a "
                f"model inside a model ...). Rebuild it as one functional model, {LOCAL_HINT}."
            )
        if node.get("class_name") != "Sequential":
            return
        inner = node.get("config")
        layers = inner.get("layers") if isinstance(inner, dict) else inner
        n = sum(1 for layer in layers if not (isinstance(layer, dict) and layer.get("class_name") == "InputLayer")
                ) if isinstance(layers, list) else 0
        self.sequential_cost += n * n
        if n > MAX_SEQUENTIAL_LAYERS or self.sequential_cost > MAX_SEQUENTIAL_COST:
            what = (f"Sequential '{where}'" if where else "a Sequential") + f" of {n:,} layers"
            raise InputError(
                f"'{self.file_name}' holds {what}"
                + ("" if n > MAX_SEQUENTIAL_LAYERS else " (with its other Sequentials)")
                + f". Keras rebuilds a Sequential after every layer it adds while loading it, so "
                f"its load time grows with the square of its length; uploaded models may have "
                f"Sequentials of at most {MAX_SEQUENTIAL_LAYERS} layers in all. Rebuild it as a "
                f"functional model (keras.Model(inputs, outputs)), which loads in linear time, "
                f"{LOCAL_HINT}."
            )

    def _too_many_layers(self) -> InputError:
        return InputError(
            f"'{self.file_name}' has more than {MAX_LAYERS:,} layers (counting those inside nested "
            f"models); uploaded models may have at most {MAX_LAYERS:,}, more than the largest Keras "
            f"Applications model. Upload a smaller model, {LOCAL_HINT}."
        )

    # -- one Keras object -------------------------------------------------

    def _check_object(self, d: dict, compiling: bool, owner: str | None) -> str | None:
        cls = d["class_name"]
        if not isinstance(cls, str):
            raise damaged(self.file_name, "an object in its model description has a non-text class name")
        module = d.get("module")
        registered = d.get("registered_name")
        inner = d.get("config")
        obj_name = _object_name(d)
        where = obj_name or owner

        if cls in DATA_MARKERS:
            return owner
        if cls == "__lambda__":
            raise InputError(
                f"This model contains a Python lambda{in_layer(owner)}, which is code; "
                "uploaded models may only use built-in Keras layers. Rebuild it without "
                f"Lambda layers or Python functions, {LOCAL_HINT}."
            )
        if cls == "__typespec__":
            raise self._not_allowed(cls, module, where)
        if cls in REFUSED_CLASSES:
            what = REFUSED_CLASSES[cls].format(where=f" ('{where}')" if where else "")
            vocab = inner.get("vocabulary") if isinstance(inner, dict) else None
            extra = f" (vocabulary file '{vocab[:200]}')" if isinstance(vocab, str) else ""
            raise InputError(
                f"This model uses {what}{extra}; uploaded models may only use built-in "
                f"Keras layers. Rebuild it without {cls} layers, {LOCAL_HINT}."
            )
        if cls == "function":
            self._check_function(d, compiling, owner)
            return owner

        if not _IDENTIFIER.match(cls) and not (compiling and cls == "Custom>Adam"):
            raise self._not_allowed(cls, module, where)

        if module is not None:
            if not isinstance(module, str):
                raise self._not_allowed(cls, module, where)
            if module != "keras" and not module.startswith("keras."):
                raise InputError(
                    f"This model refers to '{module}.{cls}'{in_layer(where)}, which is not "
                    "part of Keras; uploaded models may only use built-in Keras layers. "
                    f"Rebuild the model from keras.layers only, {LOCAL_HINT}."
                )
            pair = (module, cls)
            ok = pair in ALLOWED_CLASSES or (compiling and pair in COMPILE_CLASSES)
            if not ok:
                raise self._not_allowed(cls, module, where)
        else:
            ok = cls in BARE_NAMES or (compiling and cls in COMPILE_BARE_NAMES)
            if not ok:
                raise self._not_allowed(cls, module, where)

        if registered is not None and registered != cls:
            shown = str(registered)[:80]
            raise InputError(
                f"This model asks for '{cls}'{in_layer(where)} under the registered name "
                f"'{shown}', which would be looked up among custom (non-Keras) objects; "
                "uploaded models may only use built-in Keras layers. Save the model again "
                f"without custom objects, {LOCAL_HINT}."
            )

        self.class_names.add(cls)
        if isinstance(inner, dict):
            self._check_layer_config(cls, d, inner, where)
        elif inner is not None and not (cls == "Sequential" and isinstance(inner, list)):
            raise damaged(self.file_name, f"the config of '{cls}' is not an object")
        return obj_name or owner

    def _check_function(self, d: dict, compiling: bool, owner: str | None) -> None:
        fn = d.get("config")
        module = d.get("module")
        registered = d.get("registered_name")
        allowed = ACTIVATION_NAMES | (LOSS_METRIC_FUNCTIONS if compiling else frozenset())
        if (
            isinstance(fn, str)
            and fn in allowed
            and isinstance(module, str)
            and module in FUNCTION_MODULES
            and registered in (None, "function", fn)
        ):
            self.class_names.add(fn)
            return
        shown = f"{module}.{fn}" if isinstance(module, str) and isinstance(fn, str) else repr(fn)[:80]
        raise InputError(
            f"This model calls the Python function '{shown[:120]}'{in_layer(owner)}, which is "
            "not one of Keras' built-in activations; uploaded models may only use built-in "
            f"Keras layers and activations. Rebuild it with activation names such as 'relu', "
            f"{LOCAL_HINT}."
        )

    # -- sizes ------------------------------------------------------------

    def _check_layer_config(self, cls: str, d: dict, cfg: dict, where: str | None) -> None:
        for key in ("batch_shape", "batch_input_shape"):
            if key in cfg and cfg[key] is not None:
                self._record_input_shape(cfg[key], where)
        check_geometry(cls, cfg, where, self.file_name, self.max_input_elements)
        if cls not in WEIGHTED:
            return
        check_hyperparameters(cls, cfg, where, self.file_name)
        if self.legacy:
            return
        build_config = d.get("build_config")
        if not isinstance(build_config, dict):
            raise InputError(
                f"Layer '{where or cls}' in '{self.file_name}' has no recorded input shape, "
                "so its size cannot be checked (the model was probably saved before it was "
                "built). Build the model (give it a keras.Input) and save it again."
            )
        shape = build_input_shape(build_config)
        params = estimate_params(cls, cfg, shape, build_config)
        if params is None:
            raise damaged(
                self.file_name, f"the recorded input shape of layer '{where or cls}' is malformed"
            )
        itemsize = 8 if dtype_name(cfg) == "float64" else 4
        self.estimated_bytes += params * itemsize
        if self.estimated_bytes > self.max_weight_bytes:
            raise InputError(
                f"Building this model would allocate at least "
                f"{fmt_bytes(self.estimated_bytes)} of weights (layer '{where or cls}' alone "
                f"needs {fmt_bytes(params * itemsize)}), more than the "
                f"{fmt_bytes(self.max_weight_bytes)} allowed for uploaded models. Upload a "
                f"smaller model, {LOCAL_HINT}."
            )

    def _record_input_shape(self, shape: Any, where: str | None) -> None:
        if valid_shape(shape) is None:
            raise damaged(self.file_name, f"the input shape of '{where}' is malformed")
        elements = math.prod(d for d in shape[1:] if d is not None)
        if elements > self.max_input_elements:
            raise InputError(
                f"Input '{where}' of this model takes {elements:,} values per example "
                f"(shape {tuple(shape)}), more than the {self.max_input_elements:,} the "
                "dashboard can visualise. Use a model with a smaller input size."
            )
        self.input_shapes.append(tuple(shape))

    # -- errors -----------------------------------------------------------

    def _not_allowed(self, cls: Any, module: Any, where: str | None) -> InputError:
        full = f"{module}.{cls}" if isinstance(module, str) else str(cls)
        return InputError(
            f"This model uses '{full[:160]}'{in_layer(where)}, which is not among the built-in "
            "Keras layers this dashboard accepts in uploaded models (convolution, pooling, "
            "dense, normalisation, activation, merging, reshaping and image-preprocessing "
            f"layers). Rebuild the model from those layers, {LOCAL_HINT}."
        )

    def _safe_mode_error(self, owner: str | None) -> InputError:
        place = f" (in '{owner}')" if owner else ""
        return InputError(
            f"'{self.file_name}' tries to switch off Keras' safe mode{place}, which would let "
            "the file run code; uploaded models cannot do that. Upload the file written by "
            "model.save() unchanged."
        )


def refuse_safe_mode_keys(obj: Any, name: str, label: str) -> None:
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise damaged(name, f"its {label} is nested too deeply")
        if isinstance(node, dict):
            for key, value in node.items():
                if _SAFE_MODE_KEY.search(key):
                    raise InputError(
                        f"'{name}' tries to switch off Keras' safe mode (in {label}), which would "
                        "let the file run code; uploaded models cannot do that. Upload the file "
                        "written by model.save() unchanged."
                    )
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_json(raw: bytes, name: str, label: str) -> Any:
    """The one bounded JSON reader (size, nesting, number digits, duplicate keys), with this file's advice."""
    return schema.parse_json(raw, what=f"The {label} in '{name}'", max_bytes=MAX_CONFIG_BYTES,
                             max_depth=MAX_CONFIG_DEPTH, advice=UNCHANGED)


def _object_name(d: dict) -> str | None:
    inner = d.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str):
        name = d.get("name")
    if isinstance(name, str) and name:
        return name[:80]
    return None



def _parents(inbound: Any) -> list[str]:
    """Names of the layers a layer's ``inbound_nodes`` read from, in order (Keras 3 and legacy Keras 2 forms)."""
    found: list[str] = []
    stack = [inbound]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            history = node.get("keras_history")
            if isinstance(history, list) and history and isinstance(history[0], str):
                found.append(history[0])
            else:
                stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            if len(node) >= 3 and isinstance(node[0], str) and type(node[1]) is int and type(node[2]) is int:
                found.append(node[0])  # legacy: [layer name, node index, tensor index, kwargs]
            else:
                stack.extend(reversed(node))
    return found


def _layer_name(layer: dict) -> Any:
    name = layer.get("name")
    if not isinstance(name, str) and isinstance(layer.get("config"), dict):
        name = layer["config"].get("name")
    return name


def load_depth(config: Any, nesting: int = 0) -> int:
    """How deep Keras recurses while rebuilding this model config: the deepest its graph walk goes.

    Keras rebuilds a functional model's graph with a recursive depth-first walk from the outputs
    (``keras.src.ops.function._build_map_helper``: inputs in order, each layer once), so the stack
    it needs is the deepest path that walk takes -- not the number of layers (DenseNet201 has 709
    layers and a walk ~100 deep). A Sequential is a chain; a nested model is rebuilt on its own.
    Computed here by the same walk, iteratively.
    """
    if not isinstance(config, dict) or nesting > MAX_MODEL_NESTING:
        return 0
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else inner
    if not isinstance(layers, list):
        return 0
    nested = max((load_depth(layer, nesting + 1) for layer in layers
                  if isinstance(layer, dict) and layer.get("class_name") in MODELS), default=0)
    if config.get("class_name") == "Sequential":
        return max(len(layers), nested)
    by_name = {}
    for layer in layers:
        if isinstance(layer, dict) and isinstance(_layer_name(layer), str):
            by_name.setdefault(_layer_name(layer), layer)
    parents = {name: [p for p in _parents(layer.get("inbound_nodes")) if p in by_name]
               for name, layer in by_name.items()}
    outputs = [o[0] for o in _output_names(inner)] or list(by_name)[-1:]
    deepest = 0
    done: set[str] = set()
    for out in outputs:
        if out not in by_name or out in done:
            continue
        stack = [(out, 0)]  # (layer, index of the next input to visit): the recursion, made explicit
        active = {out}
        while stack:
            deepest = max(deepest, len(stack))
            name, i = stack[-1]
            if i < len(parents[name]):
                stack[-1] = (name, i + 1)
                nxt = parents[name][i]
                if nxt not in done and nxt not in active:
                    stack.append((nxt, 0))
                    active.add(nxt)
            else:
                stack.pop()
                active.discard(name)
                done.add(name)
    return max(deepest, nested)


def _output_names(inner: Any) -> list[list]:
    outs = inner.get("output_layers") if isinstance(inner, dict) else None
    if isinstance(outs, list) and len(outs) == 3 and isinstance(outs[0], str):
        outs = [outs]  # a single output may be written unwrapped
    return [o for o in outs if isinstance(o, list) and o and isinstance(o[0], str)] if isinstance(outs, list) else []
