"""Training checkpoints: one ``.npz`` file, written atomically, read without pickle.

Layout of the file (a plain ``numpy.savez`` zip):

* every array of the nested state trees under a prefixed key, e.g. ``params/conv1.weight``,
  ``optimizer_state/state/conv1.weight/velocity``, ``preprocess_state/mean``;
* ``__meta__``: one unicode string holding JSON: format tag and version, the scalar fields
  (``spec_text``, ``seed``, ``epoch``, ``step``, ``metrics``, ``extra``) and the tree structure,
  where each array leaf is written ``{"__array__": "<key>"}``.

Writing goes to a temporary file in the same folder, is flushed and fsync'ed, then moved over the
target with ``os.replace``, so a crash or error mid-write leaves any old checkpoint intact.
Loading uses ``np.load(allow_pickle=False)``; anything unreadable raises :class:`DataError`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncalc.errors import DataError, TrainError

__all__ = ["FORMAT", "VERSION", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "cnncalc-checkpoint"
VERSION = 1
_META = "__meta__"
_TREES = ("params", "buffers", "optimizer_state", "schedule_state", "preprocess_state",
          "metrics", "extra")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns (the fields :func:`save_checkpoint` took)."""

    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    optimizer_state: Any
    schedule_state: Any
    preprocess_state: Any
    spec_text: str
    seed: int | None
    epoch: int
    step: int
    metrics: Any = None
    extra: Any = None
    version: int = VERSION
    path: str | None = field(default=None, compare=False)

    def epoch_history(self) -> list[dict]:
        """``metrics`` as training writes it, one mapping per epoch (resuming appends to it).

        Raises :class:`DataError` when ``metrics`` is another shape."""
        epochs = self.metrics or []
        if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
            raise DataError(f"checkpoint {self.path}: field 'metrics' must be a list of "
                            "per-epoch mappings to resume training",
                            hint="the file was not written by `cnncalc train`; use another "
                                 "checkpoint")
        return [dict(e) for e in epochs]


def _split(obj: Any, key: str, arrays: dict[str, np.ndarray], where: str) -> Any:
    """JSON-able copy of ``obj`` with arrays moved into ``arrays`` under unique keys."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TrainError(f"checkpoint field {where} holds an object array",
                             hint="checkpoints store numeric/string arrays only (no pickle)")
        k, n = key, 1
        while k in arrays or k == _META:
            n += 1
            k = f"{key}~{n}"
        arrays[k] = obj
        return {"__array__": k}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TrainError(f"checkpoint field {where} has a non-string key {k!r}")
            out[k] = _split(v, f"{key}/{k}", arrays, f"{where}.{k}")
        if len(out) == 1 and ("__array__" in out or "__float__" in out):
            raise TrainError(f"checkpoint field {where} uses a reserved key ({next(iter(out))})")
        return out
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{key}/{i}", arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):  # strict JSON has no inf/nan
            return {"__float__": repr(obj)}
        return obj
    raise TrainError(f"checkpoint field {where} holds a {type(obj).__name__}, which cannot be "
                     "stored", hint="use numbers, strings, lists, dicts and numpy arrays")


def _join(obj: Any, arrays: dict[str, np.ndarray], path: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            k = obj["__array__"]
            if k not in arrays:
                raise DataError(f"checkpoint {path} lacks array {k!r}",
                                hint="the file is damaged; use another checkpoint")
            return arrays[k]
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _join(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays, path) for v in obj]
    return obj


def save_checkpoint(path: str | os.PathLike, *, params: dict[str, np.ndarray],
                    buffers: dict[str, np.ndarray] | None, optimizer_state: Any,
                    schedule_state: Any, preprocess_state: Any, spec_text: str,
                    seed: int | None, epoch: int, step: int, metrics: Any = None,
                    extra: Any = None) -> Path:
    """Write a checkpoint atomically to ``path`` (the name is used as given) and return it.

    The tree-valued fields (``params``, ``buffers``, ``optimizer_state``, ``schedule_state``,
    ``preprocess_state``, ``metrics``, ``extra``) may nest dicts, lists, numbers, strings,
    ``None`` and numpy arrays.

    Raises
    ------
    TrainError
        A value that cannot be stored without pickle, or NaN/inf weights (nothing is written, so
        a good checkpoint on disk is never replaced by a diverged one).
    OSError
        The folder is not writable (the old file, if any, is untouched).
    """
    path = Path(path)
    _check_weights(path, params, buffers or {}, error=TrainError,
                   hint="training diverged; the previous checkpoint is kept")
    arrays: dict[str, np.ndarray] = {}
    values = {"params": params, "buffers": buffers or {}, "optimizer_state": optimizer_state,
              "schedule_state": schedule_state, "preprocess_state": preprocess_state,
              "metrics": metrics, "extra": extra}
    trees = {name: _split(values[name], name, arrays, name) for name in _TREES}
    if not isinstance(spec_text, str):
        raise TrainError(f"spec_text must be a string; got {type(spec_text).__name__}")
    meta = {"format": FORMAT, "version": VERSION, "spec_text": spec_text,
            "seed": None if seed is None else int(seed), "epoch": int(epoch), "step": int(step),
            "trees": trees}
    arrays[_META] = np.array(json.dumps(meta, allow_nan=False))
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (best effort; not possible on every platform)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _check_weights(path: Path, params: Any, buffers: Any, error=DataError,
                   hint: str = "the weights diverged before this was saved; use an earlier "
                               "checkpoint") -> None:
    """Refuse NaN/inf weights: resuming them would train and save NaN again with exit 0."""
    from cnncalc.engine.finite import nonfinite_message

    for tree, values in (("params", params), ("buffers", buffers)):
        if not isinstance(values, dict):
            raise error(f"checkpoint {path}: {tree} is not a mapping of arrays",
                        hint="the file is damaged; use another checkpoint")
        for name, a in values.items():
            bad = nonfinite_message(f"checkpoint {path}: {tree} entry '{name}'", a)
            if bad is not None:
                raise error(bad, hint=hint)


#: deepest nesting of the metadata JSON: cnncalc writes fewer than 10 levels; a crafted file
#: nested thousands deep would exhaust Python's recursion while it is read
MAX_META_DEPTH = 64
#: the largest epoch or step count a checkpoint may claim
MAX_COUNT = 2**53
_NONE = type(None)
#: the metadata's scalar fields: the types each must have
SCALAR_TYPES: dict[str, tuple[type, ...]] = {"spec_text": (str,), "seed": (int, _NONE),
                                             "epoch": (int,), "step": (int,)}
#: each tree: the containers it may be (None: not saved)
TREE_TYPES: dict[str, tuple[type, ...]] = {
    "params": (dict,), "buffers": (dict, _NONE), "optimizer_state": (dict, _NONE),
    "schedule_state": (dict, _NONE), "preprocess_state": (dict, _NONE),
    "metrics": (list, dict, _NONE), "extra": (dict, _NONE)}
#: the keys of ``extra`` that training and evaluation read back, and their types
EXTRA_TYPES: dict[str, tuple[type, ...]] = {
    "settings": (dict, _NONE), "batch": (int,), "classes": (list, _NONE),
    "partial": (dict, _NONE), "rng_state": (dict, _NONE), "net_rng_state": (dict, _NONE),
    "best_test_acc": (int, float, _NONE), "input_shape": (list, _NONE)}
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", dict: "a mapping",
               list: "a list", _NONE: "null"}
_HINT = "the file is damaged or not a cnncalc checkpoint; use another checkpoint"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(path: Path, field_name: str, value: Any, types: tuple[type, ...]) -> None:
    """:class:`DataError` naming the file and field unless ``value`` is one of ``types`` (a
    bool is not an integer here)."""
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        wanted = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
        shown = repr(value) if isinstance(value, (str, int, float, bool)) else _kind(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise DataError(f"checkpoint {path}: field '{field_name}' must be {wanted}; got {shown}",
                        hint=_HINT)


def _depth(obj: Any) -> int:
    """How deeply ``obj`` nests lists and dicts, counted without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_META_DEPTH:
                stack.extend((v, level + 1) for v in item)
    return deepest


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` zip at ``path``, refusing other files (a ``.npy``) and
    archives that would unpack past the memory budget."""
    from cnncalc.limits import check_memory

    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(f"{path} is a single .npy array, not a checkpoint (.npz archive)",
                        hint="checkpoints are written by `cnncalc train`; was a .npy renamed?")
    if not magic.startswith(b"PK"):
        raise DataError(f"{path} is not a checkpoint: not a .npz (zip) archive", hint=_HINT)
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    check_memory(unpacked, f"checkpoint {path}", hint="is it a cnncalc checkpoint?")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _check_schema(path: Path, meta: dict, trees: dict[str, Any]) -> None:
    """The fields' types and ranges (see :data:`SCALAR_TYPES`, :data:`TREE_TYPES`,
    :data:`EXTRA_TYPES`); every array of ``params`` and ``buffers`` a real-valued float."""
    for name, types in SCALAR_TYPES.items():
        _expect(path, name, meta[name], types)
    for name in ("epoch", "step"):
        if not 0 <= meta[name] <= MAX_COUNT:
            raise DataError(f"checkpoint {path}: field '{name}' must be in 0..{MAX_COUNT:,}; "
                            f"got {meta[name]}", hint=_HINT)
    for name, types in TREE_TYPES.items():
        _expect(path, name, trees[name], types)
    for tree in ("params", "buffers"):
        for key, value in (trees[tree] or {}).items():
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                shown = f"dtype {value.dtype}" if isinstance(value, np.ndarray) else _kind(value)
                raise DataError(f"checkpoint {path}: {tree} entry '{key}' must be a float "
                                f"array; got {shown}", hint=_HINT)
    extra = trees["extra"] or {}
    for name, types in EXTRA_TYPES.items():
        if name in extra:
            _expect(path, f"extra.{name}", extra[name], types)
    if extra.get("batch", 0) < 0:
        raise DataError(f"checkpoint {path}: field 'extra.batch' must be >= 0; got "
                        f"{extra['batch']}", hint=_HINT)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its schema: the
    metadata's fields and types (:data:`SCALAR_TYPES`, :data:`TREE_TYPES`,
    :data:`EXTRA_TYPES`), its nesting (at most :data:`MAX_META_DEPTH`), real float weights.

    Raises
    ------
    DataError
        Missing, truncated, corrupt or not a cnncalc checkpoint, from a newer version, a field
        of the wrong type (the message names the file and the field), or NaN/inf weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist",
                        hint="check the path; checkpoints are written by `cnncalc train`")
    try:
        arrays = _read_arrays(path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DataError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}",
                        hint=_HINT) from None
    if _META not in arrays:
        raise DataError(f"{path} is not a cnncalc checkpoint (no {_META} entry)", hint=_HINT)
    too_deep = False
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"checkpoint {path} has unreadable metadata: {e}", hint=_HINT) from None
    except RecursionError:
        too_deep = True
    if too_deep or _depth(meta) > MAX_META_DEPTH:
        raise DataError(f"checkpoint {path}: metadata nests more than {MAX_META_DEPTH} levels",
                        hint=_HINT)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a cnncalc checkpoint", hint=_HINT)
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise DataError(f"checkpoint {path} has format version {version!r}; this cnncalc reads "
                        f"up to {VERSION}", hint="upgrade cnncalc")
    missing = [k for k in (*SCALAR_TYPES, "trees") if k not in meta]
    if missing:
        raise DataError(f"checkpoint {path} lacks the field '{missing[0]}'", hint=_HINT)
    _expect(path, "trees", meta["trees"], (dict,))
    missing = [k for k in _TREES if k not in meta["trees"]]
    if missing:
        raise DataError(f"checkpoint {path} lacks the field 'trees.{missing[0]}'", hint=_HINT)
    trees = {name: _join(meta["trees"][name], arrays, path) for name in _TREES}
    _check_schema(path, meta, trees)
    _check_weights(path, trees["params"], trees["buffers"] or {})
    return Checkpoint(
        params=trees["params"], buffers=trees["buffers"] or {},
        optimizer_state=trees["optimizer_state"], schedule_state=trees["schedule_state"],
        preprocess_state=trees["preprocess_state"], spec_text=meta["spec_text"],
        seed=meta["seed"], epoch=meta["epoch"], step=meta["step"],
        metrics=trees["metrics"], extra=trees["extra"], version=version, path=str(path))
