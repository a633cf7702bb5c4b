"""Optimizers: re-exports :mod:`cnncalc.train.optim` (``cnncalc.optim.create("adam")``)."""
from cnncalc.train.optim import *  # noqa: F403
from cnncalc.train.optim import __all__  # noqa: F401
