"""Lucid's redirected ReLU gradient, scoped to one traced graph (no process-wide patch).

A ReLU that is off (input < 0) passes no gradient, so a channel that is silent
on the grey starting image would never move. For the first
:data:`REDIRECT_STEPS` steps, wherever a row's ReLU gradient is all zero, the
gradient passes where it pushes the input up (Lucid's ``redirected_relu_grad``,
the default of its ``render_vis``).

How it is scoped: the step function is traced inside
``graph.gradient_override_map({"Relu": ..., "Relu6": ...})`` (the mechanism
Lucid and Lucent use), so only the ReLU ops created *in that graph, inside that
block* carry the redirected gradient, and the gradient is taken with
``tf.gradients`` on that graph. TensorFlow's own ``tf.nn.relu`` is never
replaced: other threads, other models and this model outside the step see
the ordinary function and gradient.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Any, Iterator

#: Lucid's redirected ReLU gradient acts in the first steps only.
REDIRECT_STEPS = 16
_NAMES = {"Relu": "VizlibRedirectedRelu", "Relu6": "VizlibRedirectedRelu6"}
#: The step counter of each graph traced with the override (the gradient reads it).
_STEP: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_registered = False


def _gradient(op: Any, dy: Any, upper: Any) -> Any:
    import tensorflow as tf

    x = op.inputs[0]
    off = x <= 0.0 if upper is None else tf.logical_or(x <= 0.0, x >= upper)
    plain = tf.where(off, tf.zeros_like(dy), dy)
    step = _STEP.get(op.graph)
    if step is None:
        return plain

    def redirect() -> Any:
        # dy > 0 where the loss would fall as x falls: below zero, pass only what pushes upward.
        pushing_down = tf.logical_and(x < 0.0, dy > 0.0)
        if upper is not None:
            pushing_down = tf.logical_or(pushing_down, tf.logical_and(x > upper, dy < 0.0))
        redirected = tf.where(pushing_down, tf.zeros_like(dy), dy)
        rows = tf.shape(x)[0]
        norm = tf.norm(tf.reshape(plain, [rows, -1]), axis=1)
        norm = tf.reshape(norm, tf.concat([[rows], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
        return tf.where(norm > 0.0, plain, redirected)

    # Only the first steps pay for the redirection; later ones run the plain ReLU gradient.
    return tf.cond(step > float(REDIRECT_STEPS), lambda: plain, redirect)


def _register() -> None:
    """Register the two gradient functions under names of their own (once per process; adds, replaces nothing)."""
    global _registered
    with _LOCK:
        if _registered:
            return
        import tensorflow as tf

        tf.RegisterGradient(_NAMES["Relu"])(lambda op, dy: _gradient(op, dy, None))
        tf.RegisterGradient(_NAMES["Relu6"])(lambda op, dy: _gradient(op, dy, 6.0))
        _registered = True


@contextlib.contextmanager
def redirected_relu(step: Any) -> Iterator[None]:
    """Inside a ``tf.function`` being traced: ReLUs created here get the redirected gradient until ``step`` > 16.

    Take the gradient with ``tf.gradients`` (a ``GradientTape`` does not read
    the override). Outside a graph (eager) it does nothing.
    """
    import tensorflow as tf

    graph = tf.compat.v1.get_default_graph()
    if tf.executing_eagerly():
        yield
        return
    _register()
    _STEP[graph] = step
    with graph.gradient_override_map(_NAMES):
        yield
