"""The architecture graph and the kernel pictures, checked against Keras' own description of the model."""

from __future__ import annotations

import gc
import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import vizlib
from vizlib import InputError
from vizlib.graph import (
    collapse, graph_figure, graph_layout, graph_png, graph_svg, kernel_canvas, kernel_figure, kernel_pixels,
    kernels, layer_graph,
)


# --------------------------------------------------------------------------- Keras' own answer


def _histories(obj):
    """Every keras_history [layer, node, tensor] referenced in a config's inbound node."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj["config"]["keras_history"]
        else:
            for v in obj.values():
                yield from _histories(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _histories(v)


def keras_layers_and_connections(km, prefix=""):
    """(layer names, {(source, target)}) from ``model.get_config()``, nested functional models flattened.

    A nested model is not a node of its own: its layers are (named ``outer/inner``, its InputLayer
    dropped), what fed it feeds its first layers and its output layer feeds what read it.
    """
    import keras

    cfg = km.get_config()
    by_name = {layer.name: layer for layer in km.layers}
    names, edges = [], set()
    entry, exit_ = {}, {}
    for lc in cfg["layers"]:
        layer = by_name.get(lc["name"])
        if isinstance(layer, keras.Model):
            inner_names, inner_edges, inner_entry, inner_exit = _nested(layer, prefix + lc["name"] + "/")
            names += inner_names
            edges |= inner_edges
            entry[lc["name"]], exit_[lc["name"]] = inner_entry, inner_exit
        elif lc["class_name"] != "InputLayer" or not prefix:
            names.append(prefix + lc["name"])
    for lc in cfg["layers"]:
        for src, _, _ in _histories(lc.get("inbound_nodes", [])):
            sources = [exit_[src]] if src in exit_ else [prefix + src]
            targets = entry.get(lc["name"], [prefix + lc["name"]])
            edges |= {(s, t) for s in sources for t in targets}
    return names, edges


def _nested(km, prefix):
    import keras

    if isinstance(km, keras.Sequential):  # a chain: each layer feeds the next (config has no inbound nodes)
        names = [prefix + layer.name for layer in km.layers]
        return names, set(zip(names, names[1:])), [names[0]], names[-1]
    names, edges = keras_layers_and_connections(km, prefix)
    cfg = km.get_config()
    inputs = {lc["name"] for lc in cfg["layers"] if lc["class_name"] == "InputLayer"}
    entry = sorted({t for s, t in edges if s.removeprefix(prefix) in inputs})
    edges = {(s, t) for s, t in edges if s.removeprefix(prefix) not in inputs}
    out_name = cfg["output_layers"][0][0] if isinstance(cfg["output_layers"][0], list) else cfg["output_layers"][0]
    return names, edges, entry, prefix + out_name


def graph_names_and_edges(g):
    names = [n.name for n in g.nodes]
    return names, {(names[a], names[b]) for a, b in g.edges}


def _reach(n, edges):
    succ = [[] for _ in range(n)]
    for a, b in edges:
        succ[a].append(b)
    out = []
    for s in range(n):
        seen, stack = set(), [s]
        while stack:
            for b in succ[stack.pop()]:
                if b not in seen:
                    seen.add(b)
                    stack.append(b)
        out.append(seen)
    return out


def assert_collapse_keeps_connectivity(g, c):
    """Every path between layers is a path between the nodes standing for them, and nothing more."""
    where = {}
    for j, nd in enumerate(c.nodes):
        for name in nd.members or (nd.name,):
            where[name] = j
    names = [n.name for n in g.nodes]
    assert set(where) == set(names)  # every layer is in exactly one node
    reach_g, reach_c = _reach(len(g.nodes), g.edges), _reach(len(c.nodes), c.edges)
    for a in range(len(g.nodes)):
        for b in reach_g[a]:
            ja, jb = where[names[a]], where[names[b]]
            assert ja == jb or jb in reach_c[ja], (names[a], names[b])
    members = [set(nd.members or (nd.name,)) for nd in c.nodes]
    for ja, jb in c.edges:  # a collapsed edge stands for at least one real connection
        assert any(s in members[ja] and t in members[jb] for s, t in graph_names_and_edges(g)[1]), (ja, jb)
    assert all(a < b for a, b in c.edges)  # still in forward order


# --------------------------------------------------------------------------- small real models


@pytest.fixture(scope="module")
def nested_model():
    """A trained branchy CNN with a nested functional block, on a task it learns in a few steps."""
    import keras

    keras.utils.set_random_seed(4)
    inner_in = keras.Input((12, 12, 6))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inner_in)
    b = keras.layers.Conv2D(6, 1, name="b")(a)
    inner_out = keras.layers.Add(name="plus")([inner_in, b])
    inner = keras.Model(inner_in, inner_out, name="core")
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    y = inner(x)
    z = keras.layers.Concatenate(name="cat")([x, y])
    z = keras.layers.GlobalAveragePooling2D(name="gap")(z)
    out = keras.layers.Dense(2, activation="softmax", name="cls")(z)
    model = keras.Model(inp, out, name="nested")
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (64, 24, 24, 3)).astype("float32")
    ys = (xs[..., 0].mean(axis=(1, 2)) > xs[..., 2].mean(axis=(1, 2))).astype("int32")
    xs[ys == 1, :, :, 0] += 0.3
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xs, ys, epochs=3, verbose=0)
    return model


def test_graph_equals_keras_own_layers_and_connections_for_the_bundled_model(bundled):
    g = layer_graph(bundled)
    names, edges = keras_layers_and_connections(bundled.model)
    got_names, got_edges = graph_names_and_edges(g)
    assert sorted(got_names) == sorted(names) and len(got_names) == len(names)
    assert got_edges == edges
    assert len(g.nodes) == len(bundled.layers) + 1  # every layer, plus the input
    assert all(a < b for a, b in g.edges)
    merges = [n for n in g.nodes if n.kind == "Add"]
    preds = g.predecessors()
    assert len(merges) == 4 and all(len(preds[g.index(n.name)]) == 2 for n in merges)  # the 4 residual adds


def test_nested_model_is_traced_through_and_collapses(nested_model):
    m = vizlib.load_model(nested_model, preprocess="unit")
    g = layer_graph(m)
    names, edges = keras_layers_and_connections(nested_model)
    got_names, got_edges = graph_names_and_edges(g)
    assert sorted(got_names) == sorted(names)
    assert got_edges == edges
    assert ("stem", "core/plus") in got_edges and ("core/plus", "cat") in got_edges  # the skip into the add
    assert [n.path for n in g.nodes if n.name.startswith("core/")] == [("core",)] * 3
    c = collapse(g, nested=True)
    core = c.nodes[c.index("core")]
    assert core.group == "model" and set(core.members) == {"core/a", "core/b", "core/plus"}
    assert graph_names_and_edges(c)[1] == {(g.nodes[0].name, "stem"), ("stem", "core"), ("stem", "cat"),
                                           ("core", "cat"), ("cat", "gap"), ("gap", "cls")}
    assert_collapse_keeps_connectivity(g, c)
    with pytest.raises(InputError, match="No nested model called"):
        collapse(g, nested=["nope"])


def test_blocks_are_found_from_structure_and_collapse_keeps_connectivity(bundled):
    g = layer_graph(bundled)
    # The mini-Xception has four residual modules: each a separable branch and a 1x1 shortcut, merged by an Add.
    assert len(g.blocks) == 4
    for name, members in g.blocks:
        assert g.nodes[g.index(members[-1])].kind == "Add"
    c = collapse(g, blocks=True)
    assert len(c.nodes) == len(g.nodes) - sum(len(m) - 1 for _, m in g.blocks)
    assert_collapse_keeps_connectivity(g, c)
    one = collapse(g, blocks=[g.blocks[1][0]])
    assert len(one.nodes) == len(g.nodes) - len(g.blocks[1][1]) + 1
    assert_collapse_keeps_connectivity(g, one)
    # The four modules are alike and follow each other: one stage, drawn as one box.
    assert [len(blocks) for _, blocks in g.stages] == [4]
    s = collapse(g, stages=True)
    stage = next(n for n in s.nodes if n.group == "stage")
    assert set(stage.members) == {m for _, members in g.blocks for m in members}
    assert len(s.nodes) == len(g.nodes) - 4 * 9 + 1
    assert_collapse_keeps_connectivity(g, s)
    with pytest.raises(InputError, match="No stage called"):
        collapse(g, stages=["nope"])


def test_layout_is_layered_and_routes_every_edge(bundled):
    g = layer_graph(bundled)
    lay = graph_layout(g)
    assert len(lay.x) == len(g.nodes) and len(lay.routes) == len(g.edges)
    for (a, b), route in zip(g.edges, lay.routes):
        assert lay.y[a] < lay.y[b]  # data flows down
        assert route[0] == (lay.x[a], lay.y[a]) and route[-1] == (lay.x[b], lay.y[b])
        assert len(route) == 2 + (lay.y[b] - lay.y[a] - 1)  # one bend per layer crossed
    taken = {(x, y) for x, y in zip(lay.x, lay.y)}
    assert len(taken) == len(g.nodes)  # no two boxes on one spot


def test_figure_svg_and_png_draw_every_node_and_edge(bundled):
    g = layer_graph(bundled)
    fig = graph_figure(g, title="t", highlight="add_2")
    layers = next(t for t in fig.data if t.name == "layers")
    assert [d[1] for d in layers.customdata] == [n.name for n in g.nodes]
    assert fig.layout.shapes and fig.layout.shapes[0].line.color == "rgb(255,43,43)"
    svg = ET.fromstring(graph_svg(g, title="t"))
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f".//{ns}rect")) == len(g.nodes) + 1  # + the background
    assert len(svg.findall(f".//{ns}polyline")) == len(g.edges)
    titles = [t.text for t in svg.findall(f".//{ns}g/{ns}title")]
    assert titles == [n.name for n in g.nodes]
    from PIL import Image

    png = Image.open(io.BytesIO(graph_png(g, collapse_blocks=True)))
    assert png.format == "PNG" and png.width > 100 and png.height > 300


def test_nodes_coloured_by_a_depth_profile_column(bundled):
    from vizlib.figures import colormap_lut
    from vizlib.graph.draw import NO_VALUE, scene

    profile = vizlib.depth_profile(bundled, vizlib.load_sample("astronaut_face"))
    g = layer_graph(bundled)
    sc = scene(g, color_by="receptive field", profile=profile)
    rf = {r["name"]: r["receptive_field"] for r in profile}
    names = [n.name for n in g.nodes]
    top = max(v for v in rf.values() if v is not None)
    i_top = next(i for i, n in enumerate(names) if rf.get(n) == top)
    assert sc.fills[i_top] == tuple(int(c) for c in colormap_lut("viridis")[255])
    assert sc.fills[names.index(g.nodes[0].name)] == NO_VALUE  # the input has no maps measured
    assert sc.values[i_top] == top
    with pytest.raises(InputError, match="depth profile"):
        scene(g, color_by="dead channels")
    with pytest.raises(InputError, match="Colour by one of"):
        scene(g, color_by="size of the moon", profile=profile)


# --------------------------------------------------------------------------- kernels


def test_kernel_pixels_equal_the_weights_under_the_stated_scaling(nested_model):
    m = vizlib.load_model(nested_model, preprocess="unit")
    k = kernels(m)
    w = nested_model.get_layer("stem").kernel.numpy()
    assert k["layer"] == "stem" and k["image_input"] and k["channel_order"] == "RGB"
    np.testing.assert_array_equal(k["weights"], w)
    s = np.abs(w).max()
    canvas, geo = kernel_canvas(k, cell_px=30)
    assert geo["mode"] == "rgb" and geo["scale"] == pytest.approx(s)
    for y0, x0, ch, cw, o in geo["cells"]:
        c = ch // 3
        for r in range(3):
            for q in range(3):
                expected = np.clip(np.rint(128 + 127 * w[r, q, :, o] / s), 1, 255)
                np.testing.assert_array_equal(canvas[y0 + r * c, x0 + q * c], expected)
                np.testing.assert_array_equal(canvas[y0 + r * c + c - 1, x0 + q * c + c - 1], expected)
    assert kernel_pixels(np.zeros((2, 2))).tolist() == [[128, 128], [128, 128]]
    assert kernel_pixels(np.array([-2.0, 0.0, 1.0, 2.0])).tolist() == [1, 128, 192, 255]


def test_bgr_models_are_shown_in_rgb(nested_model):
    m = vizlib.load_model(nested_model, preprocess="caffe")
    k = kernels(m)
    assert k["channel_order"] == "BGR"
    canvas, geo = kernel_canvas(k, cell_px=3)
    w, s = k["weights"], k["scale"]
    y0, x0, _, _, o = geo["cells"][2]
    np.testing.assert_array_equal(canvas[y0, x0], np.clip(np.rint(128 + 127 * w[0, 0, ::-1, o] / s), 1, 255))


def test_deeper_layers_grid_and_norms_and_trained_vs_untrained(nested_model):
    m = vizlib.load_model(nested_model, preprocess="unit")
    k = kernels(m, "core/a")
    w = k["weights"]
    assert w.shape == (3, 3, 6, 6) and not k["image_input"]
    canvas, geo = kernel_canvas(k)
    assert geo["mode"] == "grid" and geo["shown"] == (6, 6)
    y0, x0, ch, cw, o = geo["cells"][6 * 2 + 4]  # output channel 2, input channel 4
    assert o == 2
    assert canvas[y0, x0, 0] == np.clip(np.rint(128 + 127 * w[0, 0, 4, 2] / np.abs(w).max()), 1, 255)
    nc, ngeo = kernel_canvas(k, "norms")
    norms = np.sqrt((w ** 2).sum(axis=(0, 1))).T
    i, j = np.unravel_index(np.argmax(norms), norms.shape)
    from vizlib.figures import colormap_lut

    c = nc.shape[0] // 6
    assert tuple(nc[i * c, j * c]) == tuple(colormap_lut("viridis")[255])
    twin = vizlib.untrained(m, seed=0)
    u = kernels(twin, "core/a")
    assert not np.allclose(u["weights"], w)
    np.testing.assert_array_equal(u["weights"], kernels(vizlib.untrained(m, seed=0), "core/a")["weights"])
    fig = kernel_figure(k, untrained=u)
    cells = next(t for t in fig.data if t.name == "channels")
    assert sorted(cells.customdata) == sorted(list(range(6)) * 2)  # every output channel, on both sides
    with pytest.raises(InputError, match="not a convolution"):
        kernels(m, "cat")
    with pytest.raises(InputError, match="RGB pictures need 3"):
        kernel_canvas(k, "rgb")


def test_depthwise_kernels_are_one_grey_image_per_output_channel(bundled):
    k = kernels(bundled, "separable_conv2d_1")
    assert k["depthwise"] and k["weights"].shape[2] == 1
    canvas, geo = kernel_canvas(k)
    assert geo["mode"] == "grey" and len(geo["cells"]) == k["weights"].shape[3]
    first = kernels(bundled)
    assert first["image_input"] and first["weights"].shape[2] == 1 and first["channel_order"] == ""


# --------------------------------------------------------------------------- uploaded models


def test_an_uploaded_model_gives_the_same_graph_and_kernels(nested_model, tmp_path):
    from vizlib.isolation import open_uploaded_model

    path = tmp_path / "nested.keras"
    nested_model.save(path)
    here = vizlib.load_model(nested_model, preprocess="unit")
    with open_uploaded_model(path.read_bytes(), "nested.keras", preprocess="unit") as iso:
        g_iso, g_here = layer_graph(iso), layer_graph(here)
        assert [(n.name, n.kind, n.output_shape, n.path) for n in g_iso.nodes] == \
               [(n.name, n.kind, n.output_shape, n.path) for n in g_here.nodes]
        assert g_iso.edges == g_here.edges and g_iso.blocks == g_here.blocks
        assert [c.name for c in g_iso.containers] == ["core"]
        for layer in (None, "core/b"):
            np.testing.assert_array_equal(kernels(iso, layer)["weights"], kernels(here, layer)["weights"])


# --------------------------------------------------------------------------- every catalogue model


@pytest.mark.slow  # builds all nine Keras Applications architectures (about a minute); CI runs it
def test_every_catalogue_model_graph_equals_keras_own_description():
    import keras

    blocks, stages = {}, {}
    for name in vizlib.CATALOGUE:
        m = vizlib.load_model(name, weights=None)
        g = layer_graph(m)
        names, edges = keras_layers_and_connections(m.model)
        got_names, got_edges = graph_names_and_edges(g)
        assert sorted(got_names) == sorted(names), name
        assert got_edges == edges, name
        c = collapse(g, blocks=True)
        assert_collapse_keeps_connectivity(g, c)
        graph_layout(c)
        assert_collapse_keeps_connectivity(g, collapse(g, blocks=True, stages=True))
        blocks[name] = len(g.blocks)
        stages[name] = [len(b) for _, b in g.stages]
        del m, g
        keras.backend.clear_session()
        gc.collect()
    # Known architecture facts: residual units, dense layers, Inception modules.
    assert blocks["resnet50"] == 3 + 4 + 6 + 3
    assert blocks["densenet121"] == 6 + 12 + 24 + 16
    assert blocks["inception_v3"] == 11
    assert blocks["vgg16"] == blocks["vgg19"] == 0
    # Stages: the papers' stages (ResNet 3-4-6-3, DenseNet's dense blocks 6-12-24-16, ConvNeXt 3-3-9-3,
    # Xception's middle flow of 8).
    assert stages["resnet50"] == [3, 4, 6, 3]
    assert stages["densenet121"] == [6, 12, 24, 16]
    assert stages["convnext_tiny"] == [3, 3, 9, 3]
    assert 8 in stages["xception"]


# --------------------------------------------------------------------------- the page


def test_architecture_view_paints_colours_collapses_and_exports(offline, downloads):
    from test_app import assert_clean, charts, make_app

    g = layer_graph(vizlib.load_model("emotion_cnn"))
    at = make_app(view="graph").run()
    assert_clean(at)
    graph = next(spec for title, spec in charts(at).items() if "data flows down" in title)
    layers = next(t for t in graph["data"] if t.get("name") == "layers")
    assert [d[1] for d in layers["customdata"]] == [n.name for n in g.nodes]  # 46 boxes: nothing collapsed
    at.segmented_control(key="graph-detail").set_value("blocks").run()
    at.selectbox(key="graph-color").set_value("dead channels").run()
    at.selectbox(key="graph-search").set_value("conv2d_5").run()
    assert_clean(at)
    graph = next(spec for title, spec in charts(at).items() if "data flows down" in title)
    layers = next(t for t in graph["data"] if t.get("name") == "layers")
    assert len(layers["customdata"]) == len(g.nodes) - 4 * 9 + 4  # four residual modules of 9 layers: a box each
    assert any(t.get("marker", {}).get("showscale") for t in graph["data"])  # the colour bar
    assert graph["layout"]["shapes"]  # the found layer outlined
    files = downloads(at)
    svg = files["Graph (SVG)"]
    assert svg.startswith(b"<svg") and svg.count(b"<polyline") == len(layers["customdata"]) - 1
    assert files["Graph (PNG)"][:8] == b"\x89PNG\r\n\x1a\n"
    kernels_chart = next(t for t in charts(at).values() if any(d.get("name") == "channels" for d in t["data"]))
    cells = next(d for d in kernels_chart["data"] if d.get("name") == "channels")
    assert sorted(cells["customdata"]) == sorted(list(range(8)) * 2)  # conv2d_1: 8 kernels, trained and untrained
    assert files["Kernels (PNG)"][:4] == b"\x89PNG"
