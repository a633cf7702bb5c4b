"""Getting a network's compiled kernels ready: find out whether they are cached, compile them
in a background process, load them.

Why: numba compiles a network's kernels on their first call (12-14 s for LeNet-5's generated
chain on a fresh install) and caches them on disk (``cache=True``; the generated chain modules
in ``$CNNCALC_CACHE_DIR/gen``), after which a new process loads them in ~0.3 s. The trainer
(:mod:`cnncalc.train.trainer`) uses this module to keep that compile time out of the epoch
time and, on a cold cache, to train on the NumPy tier (:mod:`cnncalc.engine.numpy_tier`) while
:class:`BackgroundCompile` fills the caches. Nothing here runs at import, and a
:class:`cnncalc.Network` never calls it by itself.

* :func:`probe` runs one training step (loss, backward, the optimizer's flush-to-zero switch) and
  an evaluation forward on random data with numba *forbidden to compile* (a ``numba:compile``
  event listener raises at the first kernel that misses the cache): True when every kernel
  loaded from the cache (they are then loaded in this process), False when one would compile.
* :func:`warm_up` runs the same calls with compilation allowed.
* Both leave the network as they found it: batch-norm running statistics, the dropout RNG and
  the gradients are put back (parameters are never changed).
* :class:`BackgroundCompile` starts ``python -m cnncalc.engine.warmup REQUEST`` in its own
  session (Ctrl-C in the terminal does not stop it, and it finishes when the training run ends
  first, so the next run is warm). It builds the same network (spec text, dtype, threads,
  fusion) and runs :func:`warm_up`. Two of them for the same network take turns on a lock file,
  the second then only loads; numba writes its cache files through a temporary name and
  ``os.replace``, and the generated modules are written the same way, so racing runs cannot
  leave a half-written cache entry.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["BackgroundCompile", "CompileNeeded", "probe", "warm_up"]


class CompileNeeded(Exception):
    """Raised by the probe's listener where numba would compile a kernel."""


@contextlib.contextmanager
def _kept_state(net):
    """Put back what a trial step changes: buffers (batch-norm statistics), the RNG (dropout
    masks) and the gradients."""
    buffers = {k: v.copy() for k, v in net.buffers.items()}
    rng_state = net.rng.bit_generator.state
    try:
        yield
    finally:
        for k, v in buffers.items():
            net.buffers[k][...] = v
        net.rng.bit_generator.state = rng_state
        net.flat_grads[...] = 0


def _exercise(net, batch: int, seed: int = 0) -> None:
    """The calls a training run makes: training loss + backward (no input gradient), an
    optimizer step's thread state and compiled updates, and an evaluation forward."""
    from cnncalc.kernels import update

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *net.graph.input_shape)).astype(net.dtype)
    k = net.graph.output_shape.c
    y = rng.integers(0, k, batch)
    with net.lock, _kept_state(net):
        _, dlogits = net.loss(x, y, training=True)
        net.backward(dlogits, need_dx=False)
        with net.thread_state():
            update.warm(net.dtype)
        net.forward(x, training=False)


def warm_up(net, batch: int) -> None:
    """Compile (or load) every kernel a training run of ``net`` at batch ``batch`` calls."""
    _exercise(net, batch)


def probe(net, batch: int) -> bool:
    """True when every kernel a training run calls loaded from numba's cache (and is now
    loaded); False when one would have to compile (nothing is compiled)."""
    from numba.core import event

    class Refuse(event.Listener):
        def on_start(self, ev):
            raise CompileNeeded(getattr(ev.data.get("dispatcher"), "__name__", "a kernel"))

        def on_end(self, ev):
            pass

    try:
        with event.install_listener("numba:compile", Refuse()):
            _exercise(net, batch)
    except CompileNeeded:
        return False
    return True


def _request(net, batch: int) -> dict:
    return {"spec": net.graph.source or "", "dtype": net.dtype.name, "threads": net.threads,
            "fuse": net.fuse, "batch": int(batch)}


def _folder() -> Path:
    """``$CNNCALC_CACHE_DIR/warm`` (beside the generated kernels; private to this user)."""
    from cnncalc.kernels.fast import gen

    return gen._private(gen.cache_dir().parent / "warm")


class BackgroundCompile:
    """A detached process compiling a network's kernels into the on-disk caches."""

    #: every process this one started, so tests (and a caller that wants to) can wait for them
    started: list[subprocess.Popen] = []

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    @classmethod
    def start(cls, net, batch: int) -> BackgroundCompile | None:
        """Start compiling ``net``'s kernels in the background; None when that is impossible
        (the graph has no spec text, or the cache folder is unusable)."""
        req = _request(net, batch)
        if not req["spec"]:
            return None
        text = json.dumps(req, sort_keys=True)
        key = hashlib.sha1(text.encode()).hexdigest()[:16]
        try:
            folder = _folder()
            request = folder / f"{key}.{os.getpid()}.json"
            request.write_text(text)
            log = folder / f"{key}.log"
            err = open(log, "wb")   # noqa: SIM115 - handed to the child
        except OSError:
            return None
        import cnncalc

        env = dict(os.environ)
        root = str(Path(cnncalc.__file__).resolve().parent.parent)   # this cnncalc, not another
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            with err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cnncalc.engine.warmup", str(request),
                     str(folder / f"{key}.lock")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                    close_fds=True, start_new_session=True)
        except OSError:
            request.unlink(missing_ok=True)
            return None
        cls.started.append(proc)
        return cls(proc, log)

    def poll(self) -> str:
        """``"running"``, ``"done"`` or ``"failed"`` (see :attr:`log`)."""
        code = self.proc.poll()
        return "running" if code is None else ("done" if code == 0 else "failed")

    @classmethod
    def wait_all(cls, timeout: float | None = None) -> None:
        """Wait for every background compile this process started (and reap them)."""
        for proc in cls.started:
            proc.wait(timeout)
        cls.started.clear()


def main(argv: list[str]) -> int:
    """The background process: ``REQUEST LOCK`` -> build the network, run :func:`warm_up`."""
    request, lock = Path(argv[0]), argv[1]
    req = json.loads(request.read_text())
    request.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.nice(5)   # the training run in the foreground comes first
    import fcntl

    from cnncalc.engine.network import Network

    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)   # a second compile of the same network waits, then loads
        net = Network(req["spec"], dtype=req["dtype"], threads=req["threads"], fuse=req["fuse"])
        warm_up(net, req["batch"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
