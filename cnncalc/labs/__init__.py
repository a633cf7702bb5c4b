"""Classroom labs: library code behind ``cnncalc lab ...`` (one module per lab).

Each module computes numbers and returns dataclasses/dicts; nothing here prints. Rendering lives in
:mod:`cnncalc.cli.lab` and pictures in :mod:`cnncalc.labs.plotting` (matplotlib, optional).

========================= =====================================================================
module                    lab
========================= =====================================================================
:mod:`.init_stats`        activation statistics of a 10-layer net under each init (lecture table)
:mod:`.optimizers`        optimizer trajectories on 2-D functions (ravine, saddle, Rosenbrock)
:mod:`.schedules`         learning rate of every schedule, with and without warm-up
:mod:`.activations`       activation curves, measured properties, dead ReLUs
:mod:`.equivariance`      translation / rotation equivariance of conv layers, shift invariance
:mod:`.bn_fold`           fold batch norm into the conv/fc before it, check, count savings
:mod:`.preprocess`        centring, normalising, PCA, whitening; the lecture's regression example
:mod:`.filters`           a trained conv layer's filters: norms, dead filters, how alike
:mod:`.activation_maps`   one image's activation maps, a unit's receptive field, its top images
========================= =====================================================================
"""
from __future__ import annotations

import numpy as np

__all__ = ["data_rng"]


def data_rng(seed: int) -> np.random.Generator:
    """The generator for a lab's *data* (inputs, noise).

    Not ``default_rng(seed)``: :class:`cnncalc.Network` draws its weights from that stream, and
    inputs drawn from it too would equal the first weight rows (perfectly correlated with them).
    """
    return np.random.default_rng([int(seed), 0x1AB5])
