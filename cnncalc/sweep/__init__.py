"""Hyperparameter sweeps on Dask: many :func:`cnncalc.train.run` calls, one per configuration.

* :mod:`cnncalc.sweep.space` — ``--param KEY=RANGE`` -> :class:`Dimension` (``RANGES``)
* :mod:`cnncalc.sweep.driver` — :func:`run_sweep` (``METHODS``: random, grid, halving)
* :mod:`cnncalc.sweep.trial` — what a worker runs for one trial
* :mod:`cnncalc.sweep.plot` — ``sweep.png``

Importing this package does not import Dask (an optional extra, ``cnncalc[sweep]``).
"""
from cnncalc.sweep.space import SweepError

__all__ = ["SweepError"]
