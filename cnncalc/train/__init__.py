"""Training: init, preprocessing, data, checkpoints, the trainer, and :func:`run`.

``cnncalc.train.run(spec, overrides, out_dir=, resume=, callbacks=) -> RunResult`` is what
``cnncalc train`` does, as a library call. The submodules are imported on demand so that
importing ``cnncalc.train`` stays cheap and never pulls in numba:

* :mod:`cnncalc.optim` — ``create(name, **hyper)``, the registry ``OPTIMIZERS``;
  ``opt.step(params, grads, lr=)``
* :mod:`cnncalc.schedules` — ``create(name, lr=, warmup=, ...)`` -> ``sched(t) -> lr``
* :mod:`cnncalc.engine.init` — ``initialize``, ``init_params``, ``fan_in``
* :mod:`cnncalc.train.preprocess` — ``fit(name, x_train)`` -> ``Preprocessor``; ``PREPROCESSORS``
* :mod:`cnncalc.train.data` — ``load(data_arg, seed)`` -> ``Dataset``; ``DATA_SOURCES``
* :mod:`cnncalc.train.settings` — ``resolve(*layers)`` -> ``TrainSettings``
* :mod:`cnncalc.train.checkpoint` — ``save_checkpoint``, ``load_checkpoint``
"""
from cnncalc.train.runner import RunResult, run

__all__ = ["RunResult", "run"]
