"""Which kernels a training run uses, and when: the cold-start policy of the trainer.

Before the first step :class:`KernelStart` probes the network (:func:`cnncalc.engine.warmup.probe`:
one trial step with numba forbidden to compile). Warm (every kernel in numba's on-disk cache):
the kernels are now loaded and training runs on them. Cold, the message "compiling kernels
(first run only)" goes out as a :class:`Compiling` event, and either

* ``background`` (the ``compile`` setting's default): the network runs on the NumPy tier
  (:mod:`cnncalc.engine.numpy_tier`) while a detached process compiles the same network's kernels
  into the caches (:class:`cnncalc.engine.warmup.BackgroundCompile`); between two steps, once it
  is done, the network loads them (~0.3 s) and switches back to the compiled kernels with the same
  parameter, gradient and optimizer buffers (:class:`CompileEnd`). A run that ends first leaves it
  running, so the next run starts warm.
* ``wait``: the kernels compile in this process before the first step, as before. Runs with
  ``--deterministic`` always wait (a tier switch mid-run changes the float rounding, so such a
  run would not repeat bit for bit against a warm one), and so do graphs with a layer kind the
  NumPy tier lacks, and networks without spec text for the background process to build.

Either way, compiling and loading happen outside the epoch timer: the epoch time and img/s
count training only, and :attr:`KernelStart.seconds` says how long this process spent on them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["COMPILING_MESSAGE", "CompileEnd", "Compiling", "KernelStart"]

COMPILING_MESSAGE = "compiling kernels (first run only)"


@dataclass
class Compiling:
    """The kernels are not in the cache: they compile now (first run only)."""

    mode: str                 # "background" (training starts on the NumPy tier) or "wait"
    reason: str               # why this mode
    message: str = COMPILING_MESSAGE


@dataclass
class CompileEnd:
    """The compiled kernels are ready (``tier == "compiled"``), or the background compile failed
    and the run stays on the NumPy tier (``tier == "numpy"``; ``log`` has its errors)."""

    step: int                 # optimizer steps done before the compiled kernels took over
    seconds: float            # this process's time compiling or loading, outside the epochs
    tier: str
    log: str | None = None


class KernelStart:
    """The cold-start policy for one trainer's network (see the module docstring)."""

    def __init__(self, net, settings, emit):
        self.net = net
        self.settings = settings
        self.emit = emit
        self.seconds = 0.0        # compiling / loading in this process (outside the epochs)
        self.mode = "warm"        # "warm", "background" or "wait"
        self.switched_at: int | None = None
        self.batch = 1
        self._background = None

    @property
    def pending(self) -> bool:
        """A background compile is running and the network is on the NumPy tier."""
        return self._background is not None

    def _wait_reason(self) -> str | None:
        from cnncalc.engine import numpy_tier

        if self.settings.compile == "wait":
            return "compile: wait"
        if self.settings.parallel is False:
            return "--deterministic runs wait, so that they repeat bit for bit"
        missing = numpy_tier.unsupported(self.net.graph)
        if missing:
            return f"no NumPy tier for {', '.join(missing)}"
        if not self.net.graph.source:
            return "the network has no spec text to compile in the background"
        return None

    def prepare(self, batch: int, step: int = 0) -> None:
        """Before the first step: probe, then train warm, start the background compile or
        compile here (``batch``: the training batch size)."""
        from cnncalc.engine import warmup

        t0 = time.perf_counter()
        self.batch = batch
        if self.net.tier is None and warmup.probe(self.net, batch):
            self.seconds += time.perf_counter() - t0
            return
        reason = self._wait_reason()
        if reason is None:
            self._background = warmup.BackgroundCompile.start(self.net, batch)
            if self._background is None:
                reason = "the background compiler could not start"
        if reason is None:
            from cnncalc.engine.numpy_tier import NUMPY_TIER

            self.mode = "background"
            self.net.use_tier(NUMPY_TIER)
            self.emit(Compiling("background", "training starts on the NumPy tier"))
            self.seconds += time.perf_counter() - t0
            return
        self.mode = "wait"
        self.emit(Compiling("wait", reason))
        self.net.use_tier(None)
        warmup.warm_up(self.net, batch)
        self.seconds += time.perf_counter() - t0
        self.switched_at = step
        self.emit(CompileEnd(step, self.seconds, "compiled"))

    def poll(self, step: int) -> float:
        """Between steps: switch to the compiled kernels when the background compile is done.
        Returns the seconds spent here (to leave out of the epoch time)."""
        if self._background is None:
            return 0.0
        state = self._background.poll()
        if state == "running":
            return 0.0
        from cnncalc.engine import warmup
        from cnncalc.engine.numpy_tier import NUMPY_TIER

        t0 = time.perf_counter()
        log = str(self._background.log)
        self._background = None
        self.net.use_tier(None)
        if state == "done" and warmup.probe(self.net, self.batch):
            self.switched_at = step
            tier, log = "compiled", None
        else:
            self.net.use_tier(NUMPY_TIER)
            tier = "numpy"
        spent = time.perf_counter() - t0
        self.seconds += spent
        self.emit(CompileEnd(step, self.seconds, tier, log))
        return spent

    @property
    def tier(self) -> str:
        """The tier the network is on now: ``"compiled"`` or ``"numpy"``."""
        return "compiled" if self.net.tier is None else self.net.tier.name
