"""Training: optimizers, schedules, init, preprocessing, data, checkpoints (and the trainer).

The submodules are imported on demand (``from cnncalc.train import optim``) so that importing
``cnncalc.train`` stays cheap and never pulls in numba:

* :mod:`cnncalc.train.optim` — ``create(name, **hyper)``, ``OPTIMIZERS``;
  ``opt.step(params, grads, lr=)``
* :mod:`cnncalc.train.schedules` — ``create(name, lr=, warmup=, ...)`` -> ``sched(t) -> lr``
* :mod:`cnncalc.engine.init` — ``initialize``, ``init_params``, ``fan_in``
* :mod:`cnncalc.train.preprocess` — ``fit(name, x_train)`` -> ``Preprocessor``
* :mod:`cnncalc.train.data` — ``load(data_arg, seed)`` -> ``Dataset``; ``batches``
* :mod:`cnncalc.train.checkpoint` — ``save_checkpoint``, ``load_checkpoint``
"""
