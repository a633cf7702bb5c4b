"""LR schedules: re-exports :mod:`cnncalc.train.schedules` (``cnncalc.schedules.create``)."""
from cnncalc.train.schedules import *  # noqa: F403
from cnncalc.train.schedules import __all__  # noqa: F401
