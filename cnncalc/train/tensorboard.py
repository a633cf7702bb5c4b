"""TensorBoard event files for a training run, through tensorboardX (``cnncalc[tensorboard]``).

:class:`TensorBoardLogger` is a trainer callback: ``cnncalc train --tensorboard DIR`` and each
trial of ``cnncalc sweep --tensorboard DIR`` pass one to :func:`cnncalc.train.run`. It needs
neither TensorFlow nor TensorBoard; ``tensorboard --logdir DIR`` shows the curves.

Scalars: ``train/loss`` and ``train/lr`` every ``log_every`` steps (the run's setting), and per
epoch ``epoch/loss``, ``epoch/acc``, ``epoch/test_loss``, ``epoch/test_acc`` (x axis: the
step count); the run's settings as text at the start.
"""
from __future__ import annotations

import os

from cnncalc.errors import TrainError

__all__ = ["TensorBoardLogger", "require_tensorboardx"]


def require_tensorboardx():
    """The ``tensorboardX.SummaryWriter`` class, or a one-line error naming the extra."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise TrainError('--tensorboard needs tensorboardX: pip install "cnncalc[tensorboard]"'
                         ) from None
    return SummaryWriter


class TensorBoardLogger:
    """Callback writing the trainer's events to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = str(log_dir)
        self._writer_class = require_tensorboardx()
        self.writer = None
        self.log_every = 1

    def __call__(self, event) -> None:
        from cnncalc.train import trainer as T

        if isinstance(event, T.TrainBegin):
            if self.writer is None:
                self.writer = self._writer_class(self.log_dir)
            self.log_every = max(1, int(event.settings.get("log_every", 1)))
            text = "\n".join(f"    {k}: {v}" for k, v in event.settings.items())
            self.writer.add_text("settings", text, event.start_epoch)
        elif self.writer is None:
            return
        elif isinstance(event, T.StepEnd):
            if event.step % self.log_every == 0 or event.batch == event.steps_per_epoch:
                self.writer.add_scalar("train/loss", event.loss, event.step)
                self.writer.add_scalar("train/lr", event.lr, event.step)
        elif isinstance(event, T.EpochEnd):
            for key in ("loss", "acc", "test_loss", "test_acc"):
                value = getattr(event, key)
                if value is not None:
                    self.writer.add_scalar(f"epoch/{key}", value, event.step)
            self.writer.flush()
        elif isinstance(event, T.TrainEnd):
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
