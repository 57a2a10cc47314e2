"""Dataset atlas: the images that excite each channel most, over a whole dataset.

From a shell (running it again on the same ``--out`` resumes)::

    python -m vizlib.atlas build --model vgg16 --images photos/ --out atlas/
    python -m vizlib.atlas build --model emotion_cnn --images faces.zip --top 25 --engine ray --out atlas/

From Python::

    import vizlib.atlas
    atlas = vizlib.atlas.build("emotion_cnn", "faces/", "atlas/")
    atlas = vizlib.atlas.load("atlas/")
    for row in atlas.top("conv2d_7", 3):         # highest first
        print(row["path"], row["value"], row["row"], row["col"])

One pipeline of plain functions (:mod:`vizlib.atlas.pipeline`), run by the
local engine (:mod:`vizlib.atlas.local`, the default, nothing beyond
``requirements.txt``) or on Ray (:mod:`vizlib.atlas.ray_engine`, ``pip install
"ray[data]"``); results are identical whichever engine ran. The output is
Parquet + ``manifest.json`` (:mod:`vizlib.atlas.store`).
"""

from vizlib.atlas import pipeline  # noqa: F401  (registers the model operation "atlas.batch_stats")
from vizlib.atlas.job import DEFAULT_TOP, build, default_layers
from vizlib.atlas.store import Atlas, load

__all__ = ["Atlas", "DEFAULT_TOP", "build", "default_layers", "load"]

# Arguments of the wrong type are InputErrors naming them (vizlib.arguments).
from vizlib.arguments import check_namespace as _check_namespace  # noqa: E402

_check_namespace(globals())
