"""Issue #17 through AppTest: a fixed-seed walk over the page's controls, and label strings a browser sends.

AppTest never sends a selectbox's value back as its label the way a browser does
(tests/browser/test_walk.py proves the page in Chromium). It can *inject* such a
value into the session, which is exactly what the server receives from a browser
after the options changed: the named tests below do that. The walk is the fast
companion of the browser walk over the same action space.
"""

from __future__ import annotations

import random
import re

import pytest

from test_app import charts, make_app, png_bytes
from titles import named_in_title

BROKE = "Something went wrong"
MODELS = ("emotion_cnn", "mobilenet_v2", "resnet50", "vgg16")
SAMPLES = ("astronaut_face", "cat", "horse", "coffee", "brick", "rocket")
VIEWS = ("compare", "explore", "across", "why", "depth", "atlas", "graph", "live")


def assert_not_broken(at, where: str = "") -> None:
    assert not at.exception, (where, [e.value for e in at.exception])
    broke = [e.value for e in at.error if BROKE in e.value]
    assert not broke, (where, broke)


def class_in_label(label: str) -> str:
    if label.startswith("the top prediction: "):
        return label.removeprefix("the top prediction: ")
    return re.sub(r" \([^()]*%\)$", "", label)


def highlighted_bar(at) -> tuple[list[str], "str | None"]:
    """(bar labels, the highlighted one) of the top-5 chart: the bar in the full colour."""
    spec = next((s for t, s in charts(at).items() if t.startswith("Top-5")), None)
    if spec is None:
        return [], None
    trace = spec["data"][0]
    colours = trace.get("marker", {}).get("color")
    labels = list(trace["y"])
    if not isinstance(colours, list) or len(set(colours)) == 1:
        return labels, None
    lit = [y for y, c in zip(labels, colours) if colours.count(c) == 1]  # the one bar in its own colour
    return labels, lit[0] if len(lit) == 1 else None


def assert_names_agree(at, where: str = "") -> None:
    """The class in the picker = the class explained = the highlighted bar."""
    labels, lit = highlighted_bar(at)
    try:
        cls = at.selectbox(key="cls")
    except KeyError:
        cls = None
    if cls is None or at.segmented_control(key="view").value != "why":
        assert lit is None, (where, "a bar is highlighted outside the Why view", lit)
        return
    opts = cls.options
    label = cls.format_func(cls.value) if cls.format_func else str(cls.value)
    name = re.sub(r"\s+", " ", class_in_label(label))
    cam = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", t)) for t in charts(at)
           if t.startswith("Where the model looked for")]  # the title as read: tags and wrapping out
    assert cam and named_in_title(name, cam[0]), (where, label, cam)
    assert lit == (name if name in labels else None), (where, name, labels, lit)
    assert label in opts


def has(at, kind: str, key: str) -> bool:
    try:
        return getattr(at, kind)(key=key) is not None
    except KeyError:
        return False


def raw_value(key: str, labels: list[str], i: int):
    """The option value behind label ``i`` of the page's pickers (AppTest only knows the labels)."""
    label = labels[i]
    if key == "cls":  # options: -1 (the top prediction), then every class index
        return -1 if i == 0 else random.Random(label).randrange(len(labels) - 1)
    if key == "inspect":
        return label.split(": ", 1)[1]
    if key == "layer":
        return label.split(" ")[1]  # "#3 conv2d_2 (Conv2D, ...)"
    return "" if label.startswith("final feature map") else label.split(" ")[0]  # camlayer


def step(at, rng: random.Random) -> str:
    """One random action among those the page offers now; returns what it did."""
    choices = ["model", "sample", "upload", "source", "view", "mode", "n", "scale", "cmap"]
    for kind, key in (("selectbox", "cls"), ("selectbox", "camlayer"), ("selectbox", "layer"),
                      ("selectbox", "inspect"), ("number_input", "channel"), ("slider", "opacity"),
                      ("toggle", "twin_on")):
        if has(at, kind, key):
            choices.append(key)
    choices += ["stale label"]
    choices += ["bar click", "cell"]
    what = rng.choice(choices)
    ss = at.session_state
    if what == "model":
        name = rng.choice(MODELS)
        at.selectbox(key="model").set_value(name)
        if name != "emotion_cnn":
            ss["weights"] = "untrained"
        return f"model {name}"
    if what == "sample":
        at.radio(key="source").set_value("sample")
        name = rng.choice(SAMPLES)
        ss["image"] = name
        return f"sample {name}"
    if what == "upload":
        at.radio(key="source").set_value("upload")
        at.file_uploader(key="image_files").set_value(("walk.png", png_bytes(color=(rng.randrange(256), 90, 30)),
                                                          "image/png"))
        return "upload"
    if what == "source":
        value = rng.choice(["sample", "upload"])
        at.radio(key="source").set_value(value)
        return f"source {value}"
    if what == "view":
        value = rng.choice(VIEWS)
        at.segmented_control(key="view").set_value(value)
        return f"view {value}"
    if what == "mode":
        value = rng.choice(["first", "top", "contrib"])
        ss["mode"] = value
        return f"mode {value}"
    if what == "n":
        value = rng.randrange(1, 257)
        ss["n"] = value
        return f"n {value}"
    if what == "scale":
        value = rng.choice(["shared", "channel"])
        ss["scale"] = value
        return f"scale {value}"
    if what == "cmap":
        value = rng.choice(["viridis", "magma", "gray", "plasma"])
        ss["cmap"] = value
        return f"cmap {value}"
    if what in ("cls", "camlayer", "layer", "inspect"):
        # AppTest's select_index() would set the *label*; set the value the label stands for.
        box = at.selectbox(key=what)
        i = rng.randrange(min(len(box.options), 12))
        box.set_value(raw_value(what, box.options, i))
        return f"{what} #{i}"
    if what == "channel":
        box = at.number_input(key="channel")
        value = rng.randrange(int(box.min), int(box.max) + 1)
        box.set_value(value)
        return f"channel {value}"
    if what == "opacity":
        value = rng.randrange(0, 101)
        at.slider(key="opacity").set_value(value)
        return f"opacity {value}"
    if what == "twin_on":
        at.toggle(key="twin_on").set_value(not at.toggle(key="twin_on").value)
        return "twin"
    if what == "stale label":
        # What a browser sends after the options changed: the label of a class of another model or image.
        # AppTest can only inject it while the picker is not drawn (it re-serialises drawn widgets itself).
        if at.segmented_control(key="view").value == "why":
            at.segmented_control(key="view").set_value("compare").run()
        label = rng.choice(["the top prediction: bassinet", "tabby, tabby cat (12.3%)", "happy (98.6%)",
                            "class 3 (0.1%)", "final feature map: block5_conv3 (Grad-CAM)"])
        ss[rng.choice(["cls", "camlayer"])] = label
        at.segmented_control(key="view").set_value("why")
        return f"stale label {label!r}"
    if what == "bar click":  # what on_prediction_click does with a bar's class
        ss["cls"], ss["view"] = rng.randrange(0, 7), "why"
        return f"bar class {ss['cls']}"
    value = f"{rng.randrange(0, 300)},{rng.randrange(0, 300)}"  # a map cell click, maybe off this map
    ss["cell"] = value
    return f"cell {value}"


@pytest.mark.parametrize("seed", [17, 1717])
def test_app_walk_never_breaks(offline, seed):
    rng = random.Random(seed)
    at = make_app().run()
    done = []
    for i in range(40):
        done.append(step(at, rng))
        at.run()
        where = f"seed {seed}: " + " → ".join(done[-6:])
        assert_not_broken(at, where)
        assert_names_agree(at, where)


# --------------------------------------------------------------------------- named regressions


def test_a_top_prediction_label_of_another_model_is_the_top_prediction(offline):
    """The browser sends "the top prediction: bassinet" (VGG16's) to ResNet50's Why view: no crash, top class."""
    at = make_app(model="resnet50", weights="untrained", image="cat").run()
    at.session_state["cls"] = "the top prediction: bassinet"  # (AppTest can inject it while the picker is hidden)
    at.segmented_control(key="view").set_value("why").run()
    assert_not_broken(at)
    assert at.selectbox(key="cls").value == -1
    assert_names_agree(at)


def test_a_class_label_keeps_its_meaning_across_imagenet_models(offline):
    """A label naming an ImageNet class maps to that class in another ImageNet model."""
    at = make_app(model="mobilenet_v2", weights="untrained", image="cat").run()
    at.session_state["cls"] = "tabby, tabby cat (3.1%)"
    at.segmented_control(key="view").set_value("why").run()
    assert_not_broken(at)
    assert at.selectbox(key="cls").value == 281  # "tabby, tabby cat" in ImageNet's order
    assert_names_agree(at)


def test_a_class_of_the_bundled_model_is_not_explained_in_an_imagenet_model(offline):
    """cls=3 ("happy") picked on the bundled model means nothing to MobileNetV2: top prediction, said."""
    at = make_app(view="why").run()
    at.selectbox(key="cls").set_value(3).run()
    at.selectbox(key="model").set_value("mobilenet_v2")
    at.session_state["weights"] = "untrained"
    at.run()
    assert_not_broken(at)
    assert at.selectbox(key="cls").value == -1
    assert any("'happy' is not a class" in t.value for t in at.toast), [t.value for t in at.toast]


def test_a_view_that_raised_recovers_on_the_next_change(offline, monkeypatch):
    """A class that makes the view raise is not kept: the visitor's next change draws the view again."""
    from ui import explain

    at = make_app(view="why").run()
    real = explain.explained

    def flaky(model_key, image_key, cls, *args, **kwargs):  # a defect that only one class triggers
        if cls == 2:
            raise RuntimeError("boom")
        return real(model_key, image_key, cls, *args, **kwargs)

    monkeypatch.setattr(explain, "explained", flaky)
    at.selectbox(key="cls").set_value(2).run()
    assert any(BROKE in e.value for e in at.error)
    at.slider(key="opacity").set_value(70).run()
    assert_not_broken(at)
    assert any(t.startswith("Where the model looked for") for t in charts(at))


def test_imagenet_offline_falls_back_to_untrained_weights(offline):
    at = make_app(model="vgg16").run()
    assert_not_broken(at)
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="weights").value == "untrained"
    assert any("untrained (random) weights" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.query_params["weights"] == ["untrained"]


def test_a_fragment_that_raises_is_caught_like_the_page_and_recovers(offline, monkeypatch):
    """The Architecture view draws in fragments (their own reruns skip the page's guard): an error there
    is the page's one-line message, never an exception box, the rest of the page stays, and the next
    run, once the cause is gone, draws the view again."""
    import ui.graph

    real = ui.graph._controls

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(ui.graph, "_controls", broken)
    at = make_app(view="graph").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(BROKE in e.value for e in at.error), [e.value for e in at.error]
    assert any(t.startswith("Top-5") for t in charts(at)), "the predictions went with the broken part"
    assert any(k.startswith("Kernels") or "kernel" in k.lower() for k in charts(at)) or at.selectbox(
        key="graph-kernel-layer") is not None  # the other fragment still drew
    monkeypatch.setattr(ui.graph, "_controls", real)
    at.run()
    assert_not_broken(at, "after the cause is gone")
    assert at.selectbox(key="graph-search") is not None
