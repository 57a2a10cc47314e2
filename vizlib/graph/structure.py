"""The model as a graph of layers: nodes, the real connections, collapsing, and a layered layout.

Nodes are the layers of the traced model (:func:`vizlib.layers.trace`, the one
tracer: nested models are traced through, their layers named ``outer/inner``)
plus the model's input; edges are the tensors one layer passes to another,
read from the same traced tensor graph the receptive-field engine uses
(``vizlib.receptive``), so ResNet's additions and DenseNet's and
Inception's concatenations are merges with several inputs.

The graph is worked out where the model lives (the op ``graph.layer_graph``),
so an uploaded model running in its own process gives the same graph. What
follows (collapsing, layout) is plain Python on the result.

Layout: igraph's Sugiyama layered layout (longest-path layers, barycentre
crossing reduction, long edges routed through bend points). Why igraph: see
``benchmarks/README.md`` ("Architecture graph").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional, Sequence, Union

from vizlib.errors import InputError
from vizlib.ops import op

#: Layer kinds that merge several inputs into one output.
MERGE_KINDS = frozenset({"Add", "Concatenate", "Multiply", "Average", "Subtract", "Maximum", "Minimum", "Dot"})


@dataclass(frozen=True)
class GraphNode:
    """One box of the graph: a layer, the model's input, or a collapsed group of layers."""

    name: str  # unique; a layer name as vizlib.all_layers lists it ("base/conv1"), or a group's name
    kind: str  # layer class ("Conv2D"), "InputLayer", or for a group "Functional"/"Block"
    output_shape: tuple  # without the batch axis
    path: tuple = ()  # nested models around it, outermost first: ("base",) for "base/conv1"
    index: int = -1  # position in vizlib.all_layers (-1: the model input, or a block)
    members: tuple = ()  # for a collapsed group: the names of the layers it stands for
    group: str = ""  # "" a layer; "model" a collapsed nested model; "block" a collapsed block
    opens: str = ""  # the layer the explorer opens for this node ("" when none)

    @property
    def shape_text(self) -> str:
        return "×".join("?" if d is None else str(d) for d in self.output_shape) if self.output_shape else "—"


@dataclass(frozen=True)
class LayerGraph:
    """Nodes in forward order (a topological order: every edge goes from a lower to a higher index)."""

    nodes: tuple
    edges: tuple  # (source index, target index), unique
    title: str = ""
    blocks: tuple = ()  # detected repeated blocks: (name, member names) in forward order
    stages: tuple = ()  # runs of alike blocks one after the other: (name, block names) in forward order
    containers: tuple = ()  # nested models as nodes to collapse into: GraphNode(group="model")

    def index(self, name: str) -> int:
        """Position of the node called ``name`` (``InputError`` naming close matches when absent)."""
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        import difflib

        close = difflib.get_close_matches(name, [n.name for n in self.nodes], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"The graph has no node named '{name}'.{hint}")

    def successors(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for a, b in self.edges:
            out[a].append(b)
        return out

    def predecessors(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for a, b in self.edges:
            out[b].append(a)
        return out


@dataclass(frozen=True)
class GraphLayout:
    """Where each node sits (x: across, y: layer, input at y=0) and the bend points of each edge."""

    x: tuple
    y: tuple
    routes: tuple  # per edge: ((x, y), ...) from source to target, bends included
    width: float = field(default=0.0)  # max x - min x
    depth: int = 0  # number of layers


# --------------------------------------------------------------------------- where the model lives


def tensor_graph(km: Any) -> Any:
    """The traced tensor graph (tensors, their producers and inputs) of the receptive-field engine."""
    from vizlib.receptive import layer_graph as build

    return build(km)


@op("graph.layer_graph")
def _layer_graph_op(m: Any, batch: Any) -> dict:
    """Nodes and edges of the traced model, as plain lists (they cross the process boundary)."""
    from keras import tree

    from vizlib.layers import container_names, trace

    tr = trace(m.model)
    g = tensor_graph(m.model)
    containers = container_names(tr.layers)
    infos = [i for i in tr.layers if i.name not in containers]
    first_in = tree.flatten(m.model.inputs)[0] if getattr(m.model, "inputs", None) else None
    hist = getattr(first_in, "_keras_history", None)
    input_name = str(getattr(getattr(hist, "operation", None), "name", "") or "input")
    names = [input_name] + [i.name for i in infos]
    if len(set(names)) != len(names):  # a layer called like the input: keep names unique
        names[0] = "input"
    owner = {g.input_id: 0}
    for k, info in enumerate(infos, start=1):
        for t in tree.flatten(tr.outputs[info.name]):
            owner.setdefault(id(t), k)
    edges: list[list[int]] = []
    seen: set = set()
    for k, info in enumerate(infos, start=1):
        for t in tree.flatten(tr.outputs[info.name]):
            for src in g.inputs.get(id(t), []):
                a = owner.get(src)
                if a is not None and a != k and (a, k) not in seen:
                    seen.add((a, k))
                    edges.append([a, k])
            break  # every output of a layer has the same inputs
    shape = tuple(first_in.shape[1:]) if first_in is not None else ()
    by_name = {i.name: i for i in tr.layers}
    return {
        "names": names,
        "kinds": ["InputLayer"] + [i.kind for i in infos],
        "shapes": [list(shape)] + [list(i.output_shape) for i in infos],
        "indices": [-1] + [i.index for i in infos],
        "edges": edges,
        "containers": [[c, by_name[c].kind, list(by_name[c].output_shape), by_name[c].index]
                       for c in sorted(containers, key=lambda c: by_name[c].index) if c in by_name],
    }


# --------------------------------------------------------------------------- the graph


def layer_graph(model: Any) -> LayerGraph:
    """The model's layers and their real connections, as a :class:`LayerGraph`.

    ``model`` is anything :func:`vizlib.load_model` accepts or returns, an
    uploaded model in its own process included. Every layer is a node (nested
    models' layers too, named ``outer/inner``), plus the model's input; an edge
    is a tensor passed from one layer to another. Repeated blocks and nested
    models are found here and collapsed by :func:`collapse`.
    """
    from vizlib.contract import as_model

    m = as_model(model)
    r = m.run("graph.layer_graph")
    names, kinds, shapes, indices = r["names"], r["kinds"], r["shapes"], r["indices"]
    spatial = {i.name for i in m.layers if i.is_spatial}
    nodes = []
    for name, kind, shape, index in zip(names, kinds, shapes, indices):
        shape = tuple(None if d is None else int(d) for d in shape)
        path = tuple("/".join(name.split("/")[:k]) for k in range(1, len(name.split("/"))))
        nodes.append(GraphNode(name=str(name), kind=str(kind), output_shape=shape, path=path, index=int(index),
                               opens=str(name) if name in spatial else ""))
    edges = tuple(sorted((int(a), int(b)) for a, b in r["edges"]))
    containers = tuple(GraphNode(name=c, kind=str(k), output_shape=tuple(s), index=int(i), group="model",
                                 path=tuple("/".join(c.split("/")[:j]) for j in range(1, len(c.split("/")))),
                                 opens=c if c in spatial else "")
                       for c, k, s, i in r["containers"])
    graph = LayerGraph(nodes=tuple(nodes), edges=edges, title=m.label, containers=containers)
    graph = replace(graph, blocks=tuple(find_blocks(graph)))
    return replace(graph, stages=tuple(find_stages(graph)))


def _common_prefix(names: Sequence[str]) -> str:
    """The longest common start of ``names`` that ends at a word boundary ("conv2_block1_...": "conv2_block1")."""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    prefix = first[:n]
    if all(len(s) == n or not s[n].isalnum() for s in names):
        return prefix.rstrip("_/.-")
    cut = max(prefix.rfind(c) for c in "_/.-")
    return prefix[:cut] if cut > 0 else ""


def find_blocks(graph: LayerGraph) -> list[tuple[str, tuple]]:
    """Blocks: the branching stretches between two layers every path goes through.

    A layer is a *bottleneck* when no connection jumps over it (in forward
    order). Between two consecutive bottlenecks, a stretch where the data
    branches (a residual unit, an Inception module, one of DenseNet's dense
    layers, an EfficientNet block with its squeeze-excite side path) is a
    block; it ends with its merge. Found from the structure alone, so it
    needs no model-specific names; a block is named by its layers' common name
    prefix ("conv2_block1") or else after its output ("mixed0 block"). Blocks
    never straddle the edge of a nested model.
    """
    n = len(graph.nodes)
    if n < 4:
        return []
    cover = [0] * (n + 1)
    for a, b in graph.edges:
        if b - a > 1:
            cover[a + 1] += 1
            cover[b] -= 1
    covered, running = [], 0
    for i in range(n):
        running += cover[i]
        covered.append(running > 0)
    cuts = [i for i in range(n) if not covered[i]]
    succ, pred = graph.successors(), graph.predecessors()
    blocks = []
    for start, end in zip(cuts, cuts[1:]):
        members = list(range(start + 1, end + 1))
        branching = len(succ[start]) > 1 or any(len(pred[k]) > 1 for k in members)
        paths = {graph.nodes[k].path for k in members}
        if len(members) < 3 or not branching or len(paths) != 1:
            continue
        names = [graph.nodes[k].name for k in members]
        short = [s.split("/")[-1] for s in names]
        prefix = _common_prefix(short)
        name = prefix if len(prefix) >= 3 else f"{short[-1]} block"
        path = graph.nodes[members[0]].path
        name = "/".join(path[-1:] + (name,)) if path else name
        blocks.append((name, tuple(names)))
    taken = {n.name for n in graph.nodes} | {c.name for c in graph.containers}
    out = []
    for name, members in blocks:  # unique names ("conv2_block1" could also be a layer's name)
        unique, k = name, 2
        while unique in taken:
            unique, k = f"{name} ({k})", k + 1
        taken.add(unique)
        out.append((unique, members))
    return out


def find_stages(graph: LayerGraph) -> list[tuple[str, tuple]]:
    """Stages: runs of two or more alike blocks, each feeding the next (at most one plain layer between).

    Alike: the same layer kinds in the same order (ResNet's identity blocks,
    Inception's 35x35 modules), or names with a common prefix ("conv2" for
    DenseNet's conv2_block1 to conv2_block6: one dense block of the paper).
    Named by that prefix, or "first … last" when the prefix says nothing
    (blocks named after their output) or two stages would share it.
    """
    pos = {nd.name: i for i, nd in enumerate(graph.nodes)}

    def signature(members: tuple) -> tuple:
        return tuple(graph.nodes[pos[m]].kind for m in members)

    runs: list[list[tuple[str, tuple]]] = []
    for block in graph.blocks:
        run = runs[-1] if runs else None
        if run is not None:
            prev_members = run[-1][1]
            gap = pos[block[1][0]] - pos[prev_members[-1]] - 1  # the next block's entry layer, and any before it
            between = range(pos[prev_members[-1]] + 1, pos[block[1][0]])
            same_path = all(graph.nodes[i].path == graph.nodes[pos[prev_members[-1]]].path for i in between)
            short = [run[0][0].split("/")[-1], block[0].split("/")[-1]]
            named = not any(n.endswith(" block") for n in short)  # not named after their output alone
            alike = signature(prev_members) == signature(block[1]) or (named and len(_common_prefix(short)) >= 3)
            if gap <= 2 and same_path and alike:
                run.append(block)
                continue
        runs.append([block])
    runs = [run for run in runs if len(run) >= 2]
    prefixes = []
    for run in runs:
        short = [b.split("/")[-1] for b, _ in run]
        prefix = _common_prefix(short)
        named = len(prefix) >= 3 and not all(n.endswith(" block") for n in short)
        prefixes.append((prefix if named else "", short))
    counts: dict[str, int] = {}
    for prefix, _ in prefixes:
        counts[prefix] = counts.get(prefix, 0) + 1
    taken = {n.name for n in graph.nodes} | {c.name for c in graph.containers} | {b for b, _ in graph.blocks}
    out = []
    for run, (prefix, short) in zip(runs, prefixes):
        name = prefix if prefix and counts[prefix] == 1 else f"{short[0]} … {short[-1]}"
        path = graph.nodes[pos[run[0][1][0]]].path
        name = "/".join(path[-1:] + (name,)) if path else name
        unique, k = name, 2
        while unique in taken:
            unique, k = f"{name} ({k})", k + 1
        taken.add(unique)
        out.append((unique, tuple(b for b, _ in run)))
    return out


def collapse(graph: LayerGraph, *, nested: Union[bool, Iterable[str]] = False,
             blocks: Union[bool, Iterable[str]] = False, stages: Union[bool, Iterable[str]] = False) -> LayerGraph:
    """The graph with nested models, repeated blocks and/or stages each drawn as one node.

    ``nested``: True collapses every nested model (outermost wins), or give the
    names of the ones to collapse. ``blocks``: True collapses every block of
    :attr:`LayerGraph.blocks`, or give their names; ``stages`` likewise for
    :attr:`LayerGraph.stages` (a stage wins over its blocks). Connectivity is
    kept: an edge between two layers becomes an edge between the nodes that
    stand for them (none inside one node).
    """
    group_of: dict[int, GraphNode] = {}
    want_models = ({c.name for c in graph.containers} if nested is True
                   else set() if nested is False else set(nested))
    unknown = want_models - {c.name for c in graph.containers}
    if unknown:
        raise InputError(f"No nested model called {', '.join(sorted(unknown))} in this graph.")
    for c in sorted(graph.containers, key=lambda c: len(c.path)):
        if c.name not in want_models:
            continue
        members = [i for i, nd in enumerate(graph.nodes) if c.name in nd.path and i not in group_of]
        if not members:
            continue
        node = replace(c, members=tuple(graph.nodes[i].name for i in members),
                       opens=c.opens or next((graph.nodes[i].opens for i in reversed(members)
                                              if graph.nodes[i].opens), ""))
        for i in members:
            group_of[i] = node
    want_blocks = ({b for b, _ in graph.blocks} if blocks is True
                   else set() if blocks is False else set(blocks))
    unknown = want_blocks - {b for b, _ in graph.blocks}
    if unknown:
        raise InputError(f"No block called {', '.join(sorted(unknown))} in this graph.")
    pos = {nd.name: i for i, nd in enumerate(graph.nodes)}
    want_stages = ({st for st, _ in graph.stages} if stages is True
                   else set() if stages is False else set(stages))
    unknown = want_stages - {st for st, _ in graph.stages}
    if unknown:
        raise InputError(f"No stage called {', '.join(sorted(unknown))} in this graph.")
    block_members = dict(graph.blocks)
    for name, names in graph.stages:  # the blocks and the plain layers between them
        idx = list(range(pos[block_members[names[0]][0]], pos[block_members[names[-1]][-1]] + 1))
        members = tuple(graph.nodes[i].name for i in idx)
        if name not in want_stages or any(i in group_of for i in idx):
            continue
        exit_node = graph.nodes[idx[-1]]
        node = GraphNode(name=name, kind=f"{len(names)} blocks", output_shape=exit_node.output_shape,
                         path=exit_node.path, members=members, group="stage", opens=exit_node.opens,
                         index=exit_node.index)
        for i in idx:
            group_of[i] = node
    for name, members in graph.blocks:
        idx = [pos[s] for s in members]
        if name not in want_blocks or any(i in group_of for i in idx):
            continue
        exit_node = graph.nodes[idx[-1]]
        node = GraphNode(name=name, kind="Block", output_shape=exit_node.output_shape, path=exit_node.path,
                         members=tuple(members), group="block", opens=exit_node.opens, index=exit_node.index)
        for i in idx:
            group_of[i] = node
    if not group_of:
        return graph
    new_nodes: list[GraphNode] = []
    new_index: dict[int, int] = {}
    placed: dict[str, int] = {}
    for i, nd in enumerate(graph.nodes):
        g = group_of.get(i)
        if g is None:
            new_index[i] = len(new_nodes)
            new_nodes.append(nd)
        else:
            if g.name not in placed:  # a group sits where its first member was: order stays topological
                placed[g.name] = len(new_nodes)
                new_nodes.append(g)
            new_index[i] = placed[g.name]
    edges = {(new_index[a], new_index[b]) for a, b in graph.edges if new_index[a] != new_index[b]}
    return replace(graph, nodes=tuple(new_nodes), edges=tuple(sorted(edges)))


# --------------------------------------------------------------------------- layout


def layers_of(graph: LayerGraph) -> list[int]:
    """Longest-path layering: each node one below the lowest of its inputs (the input on layer 0)."""
    depth = [0] * len(graph.nodes)
    for a, b in sorted(graph.edges, key=lambda e: e[1]):
        depth[b] = max(depth[b], depth[a] + 1)
    return depth


def graph_layout(graph: LayerGraph, *, maxiter: int = 100) -> GraphLayout:
    """A layered (Sugiyama) layout of ``graph`` by igraph: input on top, data flowing down.

    Nodes of one layer are ordered to reduce crossings (barycentre heuristic);
    an edge spanning several layers bends around the nodes in between (its
    route lists the bend points).
    """
    import igraph

    n = len(graph.nodes)
    if n == 0:
        raise InputError("This graph has no nodes to lay out.")
    g = igraph.Graph(n=n, edges=list(graph.edges), directed=True)
    layers = layers_of(graph)
    lay = g.layout_sugiyama(layers=layers, hgap=1, vgap=1, maxiter=int(maxiter))
    coords = lay.coords[:n]
    xs = [float(c[0]) for c in coords]
    ys = [float(c[1]) for c in coords]
    lo = min(xs)
    xs = [x - lo for x in xs]
    routing = getattr(lay, "edge_routing", None) or [[] for _ in graph.edges]
    routes = []
    for (a, b), bends in zip(graph.edges, routing):
        pts = [(xs[a], ys[a])] + [(float(p[0]) - lo, float(p[1])) for p in bends] + [(xs[b], ys[b])]
        routes.append(tuple(pts))
    return GraphLayout(x=tuple(xs), y=tuple(ys), routes=tuple(routes), width=max(xs) if xs else 0.0,
                       depth=(max(layers) + 1) if layers else 0)


def search(graph: LayerGraph, text: str) -> Optional[int]:
    """The node best matching ``text`` (exact name, then a node holding that layer, then a substring)."""
    text = (text or "").strip()
    if not text:
        return None
    for i, nd in enumerate(graph.nodes):
        if nd.name == text:
            return i
    for i, nd in enumerate(graph.nodes):
        if text in nd.members:
            return i
    low = text.lower()
    for i, nd in enumerate(graph.nodes):
        if low in nd.name.lower() or any(low in s.lower() for s in nd.members):
            return i
    return None

