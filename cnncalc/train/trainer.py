"""The training loop: mini-batch SGD over a :class:`cnncalc.Network`, emitting events, never printing.

Loop (the lecture's): sample a shuffled mini-batch, forward + softmax cross-entropy, backward,
then ONE optimizer call over the flat buffer of trained parameters::

    opt.step({"all": net.trainable_params}, {"all": net.trainable_grads}, lr=schedule(t))

so every optimizer of :mod:`cnncalc.optim` updates all ~62k LeNet-5 parameters in one
vectorised pass, and its state (``velocity``, moments) is one flat array too.

Frozen layers (``trainable: false``) lie outside that view (the network puts them last): they
get no update, no weight decay and no optimizer state, and stay bit-identical to their
initial (or loaded) values; checkpoints keep them. As in PyTorch with ``requires_grad=False``,
a frozen batchnorm still updates its running mean and variance in training mode: only γ and β
are frozen (PyTorch freezes the statistics too only when that layer is put in eval mode).

Events (dataclasses below) go to every callback, a callable ``cb(event)``: :class:`TrainBegin`,
:class:`StepEnd` (every step), :class:`EpochEnd`, :class:`CheckpointSaved` and :class:`TrainEnd`;
on a first run (kernels not in the cache) :class:`~cnncalc.train.kernels.Compiling` and
:class:`~cnncalc.train.kernels.CompileEnd` (:mod:`cnncalc.train.kernels`: the cold-start
policy; compile and kernel-loading time is never counted in the epoch time).
The CLI's callback drives a rich progress bar; :class:`CSVLogger` writes the metrics CSV.

Guard rails:

* a NaN/inf loss stops training before the bad update is applied and raises
  :class:`DivergedError` (the step, the value, the learning rate); so do weights that an update
  made NaN/inf (checked per step by one sum over the flat parameter buffer: a NaN or inf
  anywhere makes the sum non-finite). The last good checkpoint on disk is left as it is, and
  :func:`~cnncalc.train.checkpoint.save_checkpoint` refuses NaN/inf weights anyway;
* SIGINT (Ctrl-C) during :meth:`Trainer.fit` finishes the current step, writes a checkpoint
  (mid-epoch, resumable exactly) and returns a history with ``status="interrupted"``; a second
  Ctrl-C aborts at once;
* :func:`check_compatible` refuses data whose (C, H, W) or class count differs from the spec's
  before any training.

Resume: a checkpoint stores the weights, BN buffers, optimizer state, the step count (the schedule
position), the preprocessing statistics, the spec text, the settings, the epoch, the position in
the epoch and the RNG states (``bit_generator.state`` of the shuffling RNG, taken at the start of
the epoch, and of the network's dropout RNG). With serial kernels (``parallel: false``) training
2 epochs equals training 1, saving, and resuming for 1 more, bit for bit.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncalc.errors import DataError, TrainError
from cnncalc.limits import check_network_memory
from cnncalc.train.kernels import CompileEnd, Compiling, KernelStart
from cnncalc.train.settings import TrainSettings, resolve

__all__ = [
    "CSVLogger",
    "CheckpointSaved",
    "CompileEnd",
    "Compiling",
    "DivergedError",
    "EpochEnd",
    "History",
    "StepEnd",
    "TrainBegin",
    "TrainEnd",
    "Trainer",
    "build",
    "check_compatible",
    "fit",
    "load_data",
]


# ------------------------------------------------------------------------------------------------
# events


@dataclass
class TrainBegin:
    epochs: int
    start_epoch: int          # completed epochs before this run (0, or the resumed epoch)
    start_batch: int          # resumed position inside the epoch
    steps_per_epoch: int
    n_train: int
    n_test: int
    batch_size: int
    n_params: int
    settings: dict
    resumed_from: str | None = None


@dataclass
class StepEnd:
    epoch: int                # 1-based epoch being run
    batch: int                # 1-based batch within the epoch
    steps_per_epoch: int
    step: int                 # optimizer steps done in total
    loss: float               # this batch's loss
    acc: float                # this batch's training accuracy
    lr: float                 # learning rate used for this step
    epoch_loss: float         # running mean over the epoch so far
    epoch_acc: float
    images: int               # images seen this epoch
    seconds: float            # training seconds this epoch
    images_per_s: float


@dataclass
class EpochEnd:
    epoch: int
    epochs: int
    loss: float               # mean training loss over the epoch
    acc: float                # training accuracy over the epoch (weights changing)
    lr: float                 # learning rate of the last step
    test_loss: float | None
    test_acc: float | None
    seconds: float            # training time (shuffle, gather, fwd, bwd, update); eval excluded
    eval_seconds: float
    images_per_s: float
    step: int


@dataclass
class CheckpointSaved:
    path: str
    epoch: int
    step: int
    reason: str               # "epoch", "best", "interrupted"


@dataclass
class TrainEnd:
    status: str               # "completed", "interrupted", "diverged"
    history: History


@dataclass
class History:
    """What :meth:`Trainer.fit` returns: one record (dict of :class:`EpochEnd`) per epoch."""

    epochs: list[dict] = field(default_factory=list)
    status: str = "completed"
    step: int = 0
    checkpoint: str | None = None
    message: str | None = None

    @property
    def last(self) -> dict | None:
        return self.epochs[-1] if self.epochs else None

    def column(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]


class DivergedError(TrainError):
    """The loss became NaN or infinite."""


Callback = Callable[[Any], None]


class CSVLogger:
    """Callback: rewrites ``path`` with one row per epoch after every :class:`EpochEnd`."""

    FIELDS = ("epoch", "step", "loss", "acc", "test_loss", "test_acc", "lr", "seconds",
              "eval_seconds", "images_per_s")

    def __init__(self, path: str | os.PathLike, history: Sequence[dict] = ()):
        self.path = Path(path)
        self.rows: list[dict] = [dict(r) for r in history]

    def __call__(self, event) -> None:
        if not isinstance(event, EpochEnd):
            return
        self.rows.append(asdict(event))
        # a temporary name unique to this process: two writers never share one
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.FIELDS, extrasaction="ignore")
                w.writeheader()
                for r in self.rows:
                    w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.FIELDS})
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# ------------------------------------------------------------------------------------------------
# data and compatibility


def load_data(settings: TrainSettings, graph) -> Any:
    """The :class:`~cnncalc.train.data.Dataset` named by ``settings.data``.

    ``synthetic[:N]`` is generated in the spec's input shape with the spec's class count (at
    most 10), so ``cnncalc train`` works on any spec without a download.
    """
    from cnncalc.train import data as data_mod

    arg = settings.data
    if data_mod.DATA_SOURCES.canonical(arg.partition(":")[0]) == "synthetic":
        k = _num_classes(graph)
        if k > len(data_mod.SYNTHETIC_CLASSES):
            raise TrainError(f"the spec ends in {k} classes; synthetic data has at most "
                             f"{len(data_mod.SYNTHETIC_CLASSES)}",
                             hint="train on real data (--data mnist:DIR, npz:FILE) or end the "
                                  "spec with fc: {units: 10}")
        c, h, w = (int(s) for s in graph.input_shape)
        if h < 8 or w < 8:
            raise TrainError(f"synthetic data needs images of at least 8x8; the spec's input is "
                             f"{h}x{w}x{c}", hint="use --data npz:FILE")
        return data_mod.load(arg, seed=settings.seed, shape=(c, h, w), num_classes=k)
    return data_mod.load(arg, seed=settings.seed)


def _num_classes(graph) -> int:
    o = graph.output_shape
    if (o.h, o.w) != (1, 1):
        raise TrainError(f"the spec's last layer '{graph.output.name}' outputs {o.h}x{o.w}x{o.c}; "
                         "a classifier must end in 1x1xK (K = the number of classes)",
                         hint="end the spec with flatten and fc: {units: K}, or global_avgpool")
    return int(o.c)


def check_compatible(graph, dataset) -> None:
    """Refuse, before training, a spec whose input or class count does not fit the data.

    Raises
    ------
    TrainError
        Input (C, H, W) differs from the data's, the last layer is not 1x1xK, or K differs from
        the data's number of classes.
    """
    c, h, w = (int(s) for s in graph.input_shape)
    dc, dh, dw = dataset.input_shape
    name = dataset.name or "the data"
    if (c, h, w) != (dc, dh, dw):
        raise TrainError(f"the spec's input is {h}x{w}x{c} (HxWxC) but {name} images are "
                         f"{dh}x{dw}x{dc}",
                         hint=f"set input: {dh}x{dw}x{dc} in the spec, or pick data of the "
                              "spec's shape")
    k = _num_classes(graph)
    n = dataset.num_classes
    if k != n:
        raise TrainError(f"the spec's last layer '{graph.output.name}' has {k} outputs but {name} "
                         f"has {n} classes",
                         hint=f"make the last layer fc: {{units: {n}}}")


# ------------------------------------------------------------------------------------------------
# the trainer


def _rng_state(rng: np.random.Generator) -> dict:
    return copy.deepcopy(rng.bit_generator.state)


class Trainer:
    """Owns a network, an optimizer, a schedule and the loop's position; runs :meth:`fit`.

    Build one with :func:`build` (from a graph, settings and data, optionally resuming a
    checkpoint), or directly from parts.

    Parameters
    ----------
    net : cnncalc.Network
    settings : TrainSettings
    optimizer, schedule : built from ``settings`` when omitted
    preprocessor : the fitted :class:`~cnncalc.train.preprocess.Preprocessor` (saved with
        checkpoints; the trainer does not apply it: pass already transformed arrays)
    spec_text : stored in checkpoints so ``evaluate``/``predict`` can rebuild the network
    classes : class names, stored in checkpoints
    out_dir : where ``last.npz`` / ``best.npz`` go (``None``: no checkpoints, except that an
        interrupt writes ``interrupt_path`` when given)
    callbacks : callables receiving the events
    """

    def __init__(self, net, settings: TrainSettings, *, optimizer=None, schedule=None,
                 preprocessor=None, spec_text: str = "", classes: Sequence[str] = (),
                 data_name: str = "", out_dir: str | os.PathLike | None = None,
                 interrupt_path: str | os.PathLike | None = None,
                 callbacks: Iterable[Callback] = (), steps_per_epoch: int | None = None):
        from cnncalc import optim, schedules

        self.net = net
        self.settings = settings
        self.optimizer = optimizer or optim.create(settings.optimizer,
                                                   **settings.optimizer_hyper())
        self._spe_hint = steps_per_epoch
        self._schedule = schedule
        self._schedules = schedules
        self.preprocessor = preprocessor
        self.spec_text = spec_text
        self.classes = list(classes)
        self.data_name = data_name
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.interrupt_path = Path(interrupt_path) if interrupt_path is not None else None
        self.callbacks: list[Callback] = list(callbacks)
        self.rng = np.random.default_rng([settings.seed, 1])   # shuffling; net.rng: dropout
        # position
        self.epoch = 0            # completed epochs
        self.batch = 0            # completed batches in epoch self.epoch + 1
        self.step = 0             # optimizer steps in total
        self._epoch_rng_state: dict | None = None
        self._partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "lr": 0.0}
        self.history = History()
        self.best_test_acc: float | None = None
        self.resumed_from: str | None = None
        self.last_checkpoint: str | None = None
        self._stop = False
        self._params = {"all": net.trainable_params}
        self._grads = {"all": net.trainable_grads}
        self.kernels = KernelStart(net, settings, self.emit)

    # -- schedule ----------------------------------------------------------------------------

    def schedule_for(self, steps_per_epoch: int):
        if self._schedule is None:
            s = self.settings
            self._schedule = self._schedules.create(s.schedule, lr=s.base_lr(),
                                                    **s.schedule_kwargs(steps_per_epoch))
        return self._schedule

    def lr_at(self, step: int, epoch_index: int) -> float:
        t = step if self.settings.schedule_per == "step" else epoch_index
        return float(self._schedule(t))

    # -- events ------------------------------------------------------------------------------

    def emit(self, event) -> None:
        for cb in self.callbacks:
            cb(event)

    # -- the loop ----------------------------------------------------------------------------

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None,
            y_test: np.ndarray | None = None, epochs: int | None = None) -> History:
        """Train until ``epochs`` (default ``settings.epochs``) epochs are complete.

        ``x_*`` are already preprocessed (N, C, H, W) arrays in the network's dtype.

        Returns
        -------
        History
            ``status`` is ``"completed"`` or ``"interrupted"`` (Ctrl-C; a checkpoint was written).

        Raises
        ------
        DivergedError
            The loss became NaN or infinite (training stops before that update).
        """
        s = self.settings
        epochs = s.epochs if epochs is None else int(epochs)
        n = len(x_train)
        if n == 0:
            raise DataError("the training set is empty")
        if len(y_train) != n:
            raise DataError(f"{n} training images but {len(y_train)} labels")
        spe = math.ceil(n / s.batch_size)
        self.schedule_for(spe)
        has_test = x_test is not None and y_test is not None and len(x_test) > 0
        self.emit(TrainBegin(epochs=epochs, start_epoch=self.epoch, start_batch=self.batch,
                             steps_per_epoch=spe, n_train=n,
                             n_test=len(x_test) if has_test else 0, batch_size=s.batch_size,
                             n_params=int(self.net.flat_params.size), settings=s.to_dict(),
                             resumed_from=self.resumed_from))
        self._stop = False
        old_handler = self._install_sigint()
        status = "completed"
        try:
            if self.epoch < epochs and not self.kernels.pending:
                # before the first step; Ctrl-C meanwhile stops after that step, as ever
                self.kernels.prepare(min(s.batch_size, n), self.step)
            while self.epoch < epochs:
                finished = self._run_epoch(x_train, y_train, spe)
                if not finished:
                    status = "interrupted"
                    break
                ev = self._end_epoch(epochs, x_test, y_test, has_test)
                self.emit(ev)
                self._save_epoch_checkpoints(ev)
                if self._stop:
                    status = "interrupted"
                    break
        except KeyboardInterrupt:   # no handler could be installed (not the main thread)
            status = "interrupted"
        except DivergedError as err:
            self.history.status = "diverged"
            self.history.message = err.message
            self.history.step = self.step
            self.emit(TrainEnd("diverged", self.history))
            raise
        finally:
            self._restore_sigint(old_handler)
        if status == "interrupted":
            path = self._interrupt_checkpoint_path()
            if path is not None:
                self.save(path, reason="interrupted")
        self.history.status = status
        self.history.step = self.step
        self.history.checkpoint = self.last_checkpoint
        self.emit(TrainEnd(status, self.history))
        return self.history

    def _run_epoch(self, x, y, spe: int) -> bool:
        """One pass (or the rest of one, when resumed mid-epoch); False when interrupted."""
        s = self.settings
        net, opt = self.net, self.optimizer
        bs = s.batch_size
        n = len(x)
        if self.batch == 0:
            self._partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0,
                             "lr": 0.0}
        self._epoch_rng_state = _rng_state(self.rng)
        t0 = time.perf_counter()
        order = self.rng.permutation(n) if s.shuffle else np.arange(n)
        xb = np.empty((min(bs, n),) + x.shape[1:], x.dtype)
        yb = np.empty(min(bs, n), np.int64)
        part = self._partial
        loss_sum, correct, seen = part["loss_sum"], part["correct"], part["seen"]
        seconds0 = part["seconds"]
        callbacks = self.callbacks
        epoch_index = self.epoch
        lr = part["lr"]
        kernels = self.kernels
        for b in range(self.batch, spe):
            if kernels.pending:   # the switch to the compiled kernels is not training time
                t0 += kernels.poll(self.step)
            idx = order[b * bs:(b + 1) * bs]
            m = len(idx)
            xo, yo = xb[:m], yb[:m]
            np.take(x, idx, axis=0, out=xo)
            np.take(y, idx, axis=0, out=yo)
            lr = self.lr_at(self.step, epoch_index)
            loss, dlogits = net.loss(xo, yo, training=True)
            if not math.isfinite(loss):
                self._diverged(loss, lr, b, spe)
            # training accuracy from dlogits = (softmax - onehot) / m: add the onehot back
            p = dlogits.copy()
            ar = np.arange(m)
            p[ar, yo] += 1.0 / m
            ok = int(np.count_nonzero(p.argmax(axis=1) == yo))
            net.backward(dlogits, need_dx=False)
            with net.thread_state():  # flush-to-zero: momentum of dead units turns denormal
                # the compiled one-pass update only where the network runs compiled kernels
                opt.step(self._params, self._grads, lr=lr, run=net.parallel,
                         compiled=net.tier is None)
            with np.errstate(all="ignore"):   # a NaN sum is what the check looks for
                total = float(net.flat_params.sum())
            if not math.isfinite(total):
                self._diverged(loss, lr, b, spe, weights=True)
            self.step += 1
            self.batch = b + 1
            loss_sum += loss * m
            correct += ok
            seen += m
            if callbacks:
                secs = seconds0 + time.perf_counter() - t0
                self.emit(StepEnd(epoch=epoch_index + 1, batch=b + 1, steps_per_epoch=spe,
                                  step=self.step, loss=float(loss), acc=ok / m, lr=lr,
                                  epoch_loss=loss_sum / seen, epoch_acc=correct / seen,
                                  images=seen, seconds=secs,
                                  images_per_s=seen / secs if secs > 0 else 0.0))
            if self._stop and self.batch < spe:
                part.update(loss_sum=loss_sum, correct=correct, seen=seen,
                            seconds=seconds0 + time.perf_counter() - t0, lr=lr)
                return False
        part.update(loss_sum=loss_sum, correct=correct, seen=seen,
                    seconds=seconds0 + time.perf_counter() - t0, lr=lr)
        self.batch = 0
        self.epoch += 1
        self._epoch_rng_state = None
        return True

    def _diverged(self, loss: float, lr: float, b: int, spe: int, weights: bool = False) -> None:
        at = (f"at step {self.step + 1} (epoch {self.epoch + 1}, batch {b + 1}/{spe}) with "
              f"learning rate {lr:g}")
        if weights:
            where = f"the update made the weights NaN/inf {at} (loss was {loss:g})"
            stopped = "Training stopped after this update; nothing was saved from it"
        else:
            where = f"loss became {loss} {at}"
            stopped = "Training stopped before applying this update"
        if self.last_checkpoint:
            kept = f"the last good checkpoint is kept: {self.last_checkpoint}"
        else:
            kept = "no checkpoint had been written yet"
        raise DivergedError(f"training diverged: {where}; the learning rate is probably too "
                            f"high. {stopped}; {kept}",
                            hint=f"try --lr {lr / 10:g}, a --warmup, or a smaller --init scale")

    def _end_epoch(self, epochs: int, x_test, y_test, has_test: bool) -> EpochEnd:
        from cnncalc.train.evaluate import evaluate

        part = self._partial
        test_loss = test_acc = None
        t0 = time.perf_counter()
        every = self.settings.eval_every
        if has_test and (self.epoch == epochs or (every and self.epoch % every == 0)):
            res = evaluate(self.net, x_test, y_test, batch_size=self.settings.eval_batch_size,
                           confusion=False)
            test_loss, test_acc = res.loss, res.accuracy
        eval_s = time.perf_counter() - t0
        seen = max(part["seen"], 1)
        secs = part["seconds"]
        ev = EpochEnd(epoch=self.epoch, epochs=epochs, loss=part["loss_sum"] / seen,
                      acc=part["correct"] / seen, lr=part["lr"], test_loss=test_loss,
                      test_acc=test_acc, seconds=secs, eval_seconds=eval_s,
                      images_per_s=part["seen"] / secs if secs > 0 else 0.0, step=self.step)
        self.history.epochs.append(asdict(ev))
        return ev

    def _save_epoch_checkpoints(self, ev: EpochEnd) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save(self.out_dir / "last.npz", reason="epoch")
        if ev.test_acc is not None and (self.best_test_acc is None
                                        or ev.test_acc > self.best_test_acc):
            self.best_test_acc = ev.test_acc
            self.save(self.out_dir / "best.npz", reason="best", record_last=False)

    def _interrupt_checkpoint_path(self) -> Path | None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            return self.out_dir / "last.npz"
        return self.interrupt_path

    # -- Ctrl-C --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current step (what the SIGINT handler calls)."""
        self._stop = True

    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop:          # second Ctrl-C: give up at once
                raise KeyboardInterrupt
            self._stop = True

        try:
            return signal.signal(signal.SIGINT, handler)
        except (ValueError, OSError):
            return None

    @staticmethod
    def _restore_sigint(old) -> None:
        if old is not None:
            try:
                signal.signal(signal.SIGINT, old)
            except (ValueError, OSError):
                pass

    # -- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything :func:`cnncalc.train.checkpoint.save_checkpoint` takes."""
        net = self.net
        mid = self.batch > 0
        rng_state = self._epoch_rng_state if mid else _rng_state(self.rng)
        return {
            "params": {k: v.copy() for k, v in net.params.items()},
            "buffers": {k: v.copy() for k, v in net.buffers.items()},
            "optimizer_state": self.optimizer.state_dict(),
            "schedule_state": {"config": self._schedule.get_config() if self._schedule else None,
                            "per": self.settings.schedule_per, "step": self.step,
                            "epoch": self.epoch},
            "preprocess_state": self.preprocessor.state_dict() if self.preprocessor else None,
            "spec_text": self.spec_text, "seed": self.settings.seed, "epoch": self.epoch, "step": self.step,
            "metrics": list(self.history.epochs),
            "extra": {"settings": self.settings.given(), "batch": self.batch,
                   "rng_state": rng_state, "net_rng_state": _rng_state(net.rng),
                   "partial": dict(self._partial), "classes": list(self.classes),
                   "data": self.data_name, "input_shape": [int(v) for v in
                                                          net.graph.input_shape],
                   "best_test_acc": self.best_test_acc,
                   "optimizer_config": self.optimizer.get_config()},
        }

    def save(self, path: str | os.PathLike, reason: str = "epoch",
             record_last: bool = True) -> Path:
        """Write a checkpoint atomically to ``path``."""
        from cnncalc.train.checkpoint import save_checkpoint

        p = save_checkpoint(path, **self.state())
        if record_last:
            self.last_checkpoint = str(p)
        self.emit(CheckpointSaved(str(p), self.epoch, self.step, reason))
        return p

    def restore(self, ckpt) -> None:
        """Continue from a :class:`~cnncalc.train.checkpoint.Checkpoint` (weights, optimizer,
        schedule position, RNG states, epoch and batch position, history)."""
        net = self.net
        state = dict(ckpt.params)
        state.update(ckpt.buffers or {})
        net.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        extra = ckpt.extra or {}
        self.epoch = int(ckpt.epoch)
        self.step = int(ckpt.step)
        self.batch = int(extra.get("batch", 0))
        try:
            if extra.get("rng_state"):
                self.rng.bit_generator.state = extra["rng_state"]
            if extra.get("net_rng_state"):
                net.rng.bit_generator.state = extra["net_rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise DataError(f"checkpoint {ckpt.path}: unreadable RNG state ({e})",
                            hint="the file is damaged; use another checkpoint") from None
        part = extra.get("partial") or {}
        try:
            self._partial = {"loss_sum": float(part.get("loss_sum", 0.0)),
                             "correct": int(part.get("correct", 0)),
                             "seen": int(part.get("seen", 0)),
                             "seconds": float(part.get("seconds", 0.0)),
                             "lr": float(part.get("lr", 0.0))}
        except (TypeError, ValueError, OverflowError) as e:
            raise DataError(f"checkpoint {ckpt.path}: unreadable training progress ({e})",
                            hint="the file is damaged; use another checkpoint") from None
        self.history = History(epochs=ckpt.epoch_history())
        self.best_test_acc = extra.get("best_test_acc")
        self.resumed_from = ckpt.path
        self.last_checkpoint = ckpt.path


# ------------------------------------------------------------------------------------------------
# assembling a run


@dataclass
class Run:
    """What :func:`build` returns: a ready trainer plus the preprocessed arrays."""

    trainer: Trainer
    graph: Any
    dataset: Any
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    data_seconds: float = 0.0   # loading and preprocessing the data

    def fit(self, epochs: int | None = None) -> History:
        return self.trainer.fit(self.x_train, self.y_train, self.x_test, self.y_test,
                                epochs=epochs)


def build(graph, settings: TrainSettings, *, dataset=None, resume=None,
          out_dir: str | os.PathLike | None = None,
          interrupt_path: str | os.PathLike | None = None,
          callbacks: Iterable[Callback] = ()) -> Run:
    """Load the data, check it against the spec, fit preprocessing, build the network and
    trainer, and restore ``resume`` (a loaded checkpoint) if given. Nothing is trained yet.

    Raises
    ------
    TrainError / DataError
        Data that does not fit the spec, unreadable data, bad settings.
    """
    from cnncalc.engine.network import Network
    from cnncalc.train import preprocess

    t0 = time.perf_counter()
    if dataset is None:
        dataset = load_data(settings, graph)
    check_compatible(graph, dataset)
    check_network_memory(graph, f"training '{graph.name}'",
                         batch=min(settings.batch_size, len(dataset.x_train)),
                         dtype_bytes=np.dtype(settings.dtype).itemsize,
                         optimizer=settings.optimizer,
                         hint="lower --batch-size, the input size or the number of filters")
    if resume is not None and resume.preprocess_state:
        prep = preprocess.from_state(resume.preprocess_state)
    else:
        prep = preprocess.fit(settings.preprocess, dataset.x_train)
    dt = np.dtype(settings.dtype)
    x_train = np.ascontiguousarray(prep.transform(dataset.x_train), dtype=dt)
    x_test = np.ascontiguousarray(prep.transform(dataset.x_test), dtype=dt)
    from cnncalc.train.data import check_finite

    check_finite(x_train, f"the preprocessed training images of {dataset.name or 'the data'}")
    check_finite(x_test, f"the preprocessed test images of {dataset.name or 'the data'}")
    data_seconds = time.perf_counter() - t0
    net = Network(graph, init=settings.init, seed=settings.seed, dtype=settings.dtype,
                  parallel=settings.parallel)
    trainer = Trainer(net, settings, preprocessor=prep, spec_text=graph.source or "",
                      classes=dataset.classes, data_name=dataset.name, out_dir=out_dir,
                      interrupt_path=interrupt_path, callbacks=callbacks)
    if resume is not None:
        trainer.restore(resume)
    return Run(trainer, graph, dataset, x_train, dataset.y_train, x_test, dataset.y_test,
               data_seconds)


def fit(model, data, optimizer=None, schedule=None, epochs: int = 1, batch_size: int = 64,
        rng: np.random.Generator | None = None, callbacks: Iterable[Callback] = (),
        **settings: Any) -> History:
    """Train ``model`` (a Network) on ``data`` (a Dataset, already preprocessed).

    The cs231n-Solver-like entry point: ``optimizer`` is an Optimizer, a name or ``None``
    (settings decide), ``schedule`` a Schedule or ``None``; extra keyword arguments are training
    settings (validated; unknown ones are errors).
    """
    from cnncalc import optim

    if isinstance(optimizer, str):
        settings["optimizer"] = optimizer
        optimizer = None
    s = resolve(("fit()", {"epochs": epochs, "batch_size": batch_size, **settings}))
    if optimizer is not None and not isinstance(optimizer, optim.Optimizer):
        optimizer = optim.get(optimizer)
    tr = Trainer(model, s, optimizer=optimizer, schedule=schedule, classes=data.classes,
                 data_name=data.name, callbacks=callbacks)
    if rng is not None:
        tr.rng = rng
    return tr.fit(data.x_train, data.y_train, data.x_test, data.y_test)
