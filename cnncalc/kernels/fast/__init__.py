"""The engine's fast path, behind one boundary (see README.md in this folder for the measured
reason behind each design choice and the bench command that reproduces it).

* :mod:`.gen` — the shape-specialised generator: source for one conv→relu→maxpool … → fc chain;
* :mod:`.chain` — runs the generated chain on batch slices (per-thread buffers);
* :mod:`.fused` — fused conv→relu→maxpool and fc(→relu) kernels for the step plan, where the
  whole network is not a chain;
* :mod:`.threads` — the worker-thread pool both of them run on;
* :mod:`.spin` — the GIL-free spin-wait of the pool's hand-over;
* :mod:`.thread_state` — flush-to-zero and single-threaded BLAS, for the engine's threads and for
  the caller only during an engine call.

Nothing is imported here: the submodules load numba.
"""
