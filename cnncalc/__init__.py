"""cnncalc: a CNN layer calculator, shape/parameter analyzer and numba-jitted trainer.

Python API::

    import cnncalc
    graph = cnncalc.load("specs/lenet5.yaml")     # or YAML text
    report = graph.analyze()                      # same data as `cnncalc analyze --format json`
    net = cnncalc.Network(graph, init="he", seed=0)
"""
from __future__ import annotations

__version__ = "0.1.0"

from cnncalc.errors import CnnCalcError, DataError, ShapeError, SpecError, TrainError
from cnncalc.graph import Graph
from cnncalc.spec import load


def __getattr__(name):
    # The engine (and numba) load only when asked for, so analysis stays fast.
    if name == "Network":
        from cnncalc.engine.network import Network
        return Network
    if name in ("optim", "schedules"):
        import importlib
        return importlib.import_module(f"cnncalc.{name}")
    raise AttributeError(f"module 'cnncalc' has no attribute {name!r}")


__all__ = ["load", "Graph", "Network", "CnnCalcError", "SpecError", "ShapeError", "TrainError",
           "DataError", "__version__"]
