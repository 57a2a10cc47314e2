"""The page receives its state (issue #19): no view reads a setting from ``st.session_state``.

``ui/page.py`` builds the checked :class:`vizlib.links.ViewState` once per run and
passes it down; views and helpers read its fields (or their own widgets' return
values). This test walks the syntax tree of every ``ui/*.py`` module and fails
on any ``st.session_state`` access (read or write, through an alias such as
``ss = st.session_state`` too) that names a ViewState field outside the places
``ui/state.py``'s docstring allows. Those places are listed here, one by one,
with the reason; an entry that no longer exists or is no longer needed fails too,
so the list stays the truth.

Keys built at run time (``st.session_state[key]``, f-strings) are not seen: widget
keys and a view's own memory are named that way, and settings never are.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, Optional

import pytest

from vizlib.links import ViewState

UI = Path(__file__).resolve().parents[1] / "ui"
SETTINGS = frozenset(f.name for f in fields(ViewState))
CALLBACK_KEYWORDS = ("on_change", "on_click", "on_select")

#: Modules that own the session's state: seeding it from the URL, checking it, writing what views ask for.
STATE_MODULES = {"state"}

#: (module, function): why it may touch a ViewState setting in ``st.session_state``.
ALLOWED: dict[tuple[str, str], str] = {
    # Callbacks: they run before the script and write the state the next run is built from.
    ("widgets", "on_grid_click"): "callback (on_select of a channel grid): picks the layer, channel, cell",
    ("widgets", "on_detail_click"): "callback (on_select of a channel's detail): picks the cell",
    ("widgets", "on_prediction_click"): "callback (on_select of the top-5 bars): explains that class",
    ("explain", "_set_cell"): "callback (on_change of the cell's row/column inputs)",
    ("explain", "on_contribution_click"): "callback (on_select of the contributions bars): picks the channel",
    ("explain", "on_depth_click"): "callback (on_select of the depth profile): opens a layer in the explorer",
    ("views", "view_explore.on_row"): "callback (on_select of the layer table): picks the layer",
    ("graph", "on_graph_click"): "callback (on_select of the layer graph): opens a layer in the explorer",
    ("graph", "on_kernel_click"): "callback (on_select of the kernels, via partial): opens a channel's map",
    ("attribution", "_set_method"): "callback (on_click of a scoreboard button): the big map's method",
    ("atlas", "_go_to"): "callback (on_click of 'Show channel N, the most active')",
    ("sidebar", "on_model_uploaded"): "callback (on_change of the model uploader): shows the uploaded model",
    ("sidebar", "on_images_uploaded"): "callback (on_change of the image uploader): shows the newest upload",
    ("live", "_to_snapshot"): "callback (on_click of 'Use the snapshot camera'): the camera in the compare view",
    ("live", "_connection_watch"): "a fragment run every second without the page's run (no ViewState is built "
                                   "then): reads view to see that the snapshot button changed the page",
}


@dataclass(frozen=True)
class Access:
    module: str
    function: str  # dotted qualname of the enclosing function ("<module>" at top level)
    key: str
    kind: str  # "read" or "write"
    line: int

    def __str__(self) -> str:
        return f"ui/{self.module}.py:{self.line} {self.function} {self.kind}s st.session_state {self.key!r}"


def _is_session_state(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "session_state":
        return isinstance(node.value, ast.Name) and node.value.id == "st"
    return isinstance(node, ast.Name) and node.id in aliases


def _const(node: Optional[ast.AST]) -> Optional[str]:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Scanner(ast.NodeVisitor):
    """Every access to ``st.session_state`` with a constant key, and the functions passed as callbacks."""

    def __init__(self, module: str):
        self.module = module
        self.scope: list[str] = []
        self.aliases: list[set[str]] = [set()]
        self.accesses: list[Access] = []
        self.callbacks: set[str] = set()  # names passed as on_change / on_click / on_select
        self.functions: set[str] = set()
        self.callback_lambdas: set[int] = set()  # id() of lambdas passed as a callback

    # scopes ----------------------------------------------------------------------------------------
    def _function(self, node) -> None:
        self.scope.append(node.name)
        self.functions.add(".".join(self.scope))
        self.aliases.append(set(self.aliases[-1]))
        self.generic_visit(node)
        self.aliases.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        if id(node) in self.callback_lambdas:
            return  # a lambda passed as a callback is a callback: it may write the state
        self.generic_visit(node)

    @property
    def where(self) -> str:
        return ".".join(self.scope) or "<module>"

    def _add(self, key: Optional[str], kind: str, node: ast.AST) -> None:
        if key is not None:
            self.accesses.append(Access(self.module, self.where, key, kind, node.lineno))

    # aliases: ss = st.session_state -----------------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_session_state(node.value, self.aliases[-1]):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.aliases[-1].add(target.id)
        self.generic_visit(node)

    # accesses ---------------------------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_session_state(node.value, self.aliases[-1]) and node.attr not in (
                "get", "pop", "setdefault", "update", "keys", "items", "values", "to_dict", "clear"):
            self._add(node.attr, "write" if isinstance(node.ctx, (ast.Store, ast.Del)) else "read", node)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_session_state(node.value, self.aliases[-1]):
            self._add(_const(node.slice), "write" if isinstance(node.ctx, (ast.Store, ast.Del)) else "read", node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)) and _is_session_state(right, self.aliases[-1]):
                self._add(_const(node.left), "read", node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg in CALLBACK_KEYWORDS:
                self._note_callback(kw.value)
        f = node.func
        if isinstance(f, ast.Attribute) and _is_session_state(f.value, self.aliases[-1]):
            if f.attr in ("get", "pop", "setdefault") and node.args:
                self._add(_const(node.args[0]), "read" if f.attr == "get" else "write", node)
            elif f.attr == "update":
                for kw in node.keywords:
                    self._add(kw.arg, "write", node)
                for arg in node.args:
                    if isinstance(arg, ast.Dict):
                        for k in arg.keys:
                            self._add(_const(k), "write", node)
        self.generic_visit(node)

    def _note_callback(self, value: ast.AST) -> None:
        if isinstance(value, ast.Lambda):
            self.callback_lambdas.add(id(value))
            body = value.body  # on_select=lambda: on_grid_click(key, ...): the function it calls is one
            if isinstance(body, ast.Call) and isinstance(body.func, ast.Name):
                self.callbacks.add(body.func.id)
        elif isinstance(value, ast.Name):
            self.callbacks.add(value.id)
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "partial" \
                and value.args and isinstance(value.args[0], ast.Name):
            self.callbacks.add(value.args[0].id)


def scan(source: str, module: str) -> _Scanner:
    scanner = _Scanner(module)
    scanner.visit(ast.parse(source))
    return scanner


def setting_accesses(scanner: _Scanner) -> Iterator[Access]:
    return (a for a in scanner.accesses if a.key in SETTINGS)


def violations(scanner: _Scanner, allowed: dict[tuple[str, str], str]) -> list[Access]:
    if scanner.module in STATE_MODULES:
        return []
    return [a for a in setting_accesses(scanner) if (a.module, a.function) not in allowed]


def _modules() -> dict[str, _Scanner]:
    return {p.stem: scan(p.read_text(encoding="utf-8"), p.stem) for p in sorted(UI.glob("*.py"))}


# --------------------------------------------------------------------------- the check itself


def test_the_checker_finds_reads_through_aliases_gets_and_subscripts():
    """The check can fail: a helper that reads settings from the session is found, in every form."""
    source = '''
import streamlit as st
from functools import partial

def helper(x):
    ss = st.session_state
    a = ss.cmap
    b = st.session_state.get("channel", 0)
    c = st.session_state["n"]
    d = "fv" in ss
    e = st.session_state.get("_private"), st.session_state.get("graph-search")
    return a, b, c, d, e

def decide():
    st.session_state.view = "why"

def on_pick():
    st.session_state["channel"] = 1

def on_kernel(layer):
    st.session_state["layer"] = layer

st.button("x", on_click=on_pick)
st.plotly_chart(None, on_select=partial(on_kernel, "conv"))
st.button("y", on_click=lambda: st.session_state.update(view="compare"))
'''
    s = scan(source, "fake")
    found = {(a.function, a.key, a.kind) for a in violations(s, {})}
    assert {("helper", "cmap", "read"), ("helper", "channel", "read"), ("helper", "n", "read"),
            ("helper", "fv", "read"), ("decide", "view", "write")} <= found
    assert ("on_pick", "channel", "write") in found  # a callback too, until it is listed
    assert not any(a.key in ("_private", "graph-search") for a in s.accesses if a.key in SETTINGS)
    assert not any(f == "<module>" for f, _, _ in found)  # the lambda passed as on_click is a callback
    assert {"on_pick", "on_kernel"} <= s.callbacks
    allowed = {("fake", "on_pick"): "callback", ("fake", "on_kernel"): "callback"}
    assert {(a.function, a.key) for a in violations(s, allowed)} == {
        ("helper", "cmap"), ("helper", "channel"), ("helper", "n"), ("helper", "fv"), ("decide", "view")}


def test_no_view_reads_a_setting_from_the_session():
    """Views and helpers get the ViewState (or their widgets' values); only the listed places touch settings."""
    found = [str(a) for s in _modules().values() for a in violations(s, ALLOWED)]
    assert not found, ("Read the setting from the ViewState the page passes down (or the widget's return "
                       "value); a view that must set a widget's value before it is drawn calls ui.state.put. "
                       "Found:\n" + "\n".join(found))


def test_every_exception_is_still_there_and_still_needed():
    """Each listed exception names a function that exists, is passed as a callback (when it says so), and still
    touches a setting: a stale entry would hide a new read under an old name."""
    modules = _modules()
    callbacks = set().union(*(s.callbacks for s in modules.values()))  # a view may pass another module's
    for (module, function), why in ALLOWED.items():
        s = modules.get(module)
        assert s is not None, f"ui/{module}.py is gone ({why})"
        assert function in s.functions, f"ui/{module}.py has no {function} any more ({why})"
        assert any(a.function == function for a in setting_accesses(s)), \
            f"ui/{module}.py {function} no longer touches a setting: drop it from ALLOWED"
        if not why.startswith("callback"):
            continue  # listed with its own reason (ui/live.py's, left for its owner)
        assert function.split(".")[-1] in callbacks, \
            f"ui/{module}.py {function} is listed as a callback but isn't passed as one"


@pytest.mark.parametrize("module", sorted(STATE_MODULES))
def test_the_state_module_is_where_settings_are_written(module):
    """ui/state.py holds the writes views ask for (put) and the checks; the whitelist isn't a blind spot."""
    s = _modules()[module]
    assert any(a.kind == "write" for a in setting_accesses(s)) or "put" in s.functions


def test_every_fragment_is_guarded_like_the_page():
    """A fragment's own reruns skip the page's guard: each one goes through ui.state.fragment (which
    guards it) -- ``st.fragment`` is called in ui/state.py only, and every fragment is made there."""
    calls = {}
    for path in sorted(UI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name == "fragment":
                    direct = isinstance(f, ast.Attribute) and getattr(f.value, "id", None) == "st"
                    calls.setdefault(path.name, []).append("st.fragment" if direct else "fragment")
    assert {m: [c for c in cs if c == "st.fragment"] for m, cs in calls.items() if "st.fragment" in cs} == \
        {"state.py": ["st.fragment"]}
    assert sum(c == "fragment" for cs in calls.values() for c in cs) >= 4  # graph (2), featvis, live
