"""The architecture at a glance: the model as a layered graph, and its kernels as pictures.

::

    g = vizlib.layer_graph(m)                          # nodes, real connections, detected blocks
    vizlib.graph_figure(m, collapse_blocks=True).show()
    k = vizlib.kernels(m)                              # the first convolution's weights
    vizlib.kernel_figure(k, untrained=vizlib.kernels(vizlib.untrained(m))).show()
"""

from vizlib.graph.structure import (
    GraphLayout, GraphNode, LayerGraph, collapse, find_blocks, find_stages, graph_layout, layer_graph, search,
)
from vizlib.graph.draw import COLOR_BY, graph_figure, graph_png, graph_svg, scene
from vizlib.graph.kernels import kernel_canvas, kernel_caption, kernel_figure, kernel_pixels, kernel_png, kernels

__all__ = ["GraphLayout", "GraphNode", "LayerGraph", "collapse", "find_blocks", "find_stages", "graph_layout",
           "layer_graph", "search", "COLOR_BY", "graph_figure", "graph_png", "graph_svg", "scene", "kernel_canvas",
           "kernel_caption", "kernel_figure", "kernel_pixels", "kernel_png", "kernels"]
