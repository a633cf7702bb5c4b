"""Datasets for training: MNIST (IDX files), CIFAR-10 (binary or python batches), ``.npz`` files, synthetic.

Every loader returns a :class:`Dataset` with ``x_*`` of shape (N, C, H, W) float32 (8-bit images
scaled to [0, 1]) and ``y_*`` int64 class indices. :func:`load` parses the CLI's ``--data``
argument:

====================== ==================================================================
``mnist:DIR``          the four IDX files (``.gz`` or not) in DIR; downloaded there if absent
``mnist``              DIR from the environment variable ``CNNCALC_MNIST_DIR``, else
                       ``$XDG_CACHE_HOME/cnncalc/mnist`` (``~/.cache/cnncalc/mnist``)
``cifar10:DIR``        the binary version (``data_batch_N.bin``, ``test_batch.bin``; or
                       DIR/cifar-10-batches-bin) or the python version (``data_batch_N``;
                       or DIR/cifar-10-batches-py), the latter through a restricted
                       unpickler that cannot run code
``npz:FILE``, ``*.npz`` arrays ``x``, ``y`` (+ optional ``x_test``, ``y_test``, ``classes``)
``synthetic[:N]``      :func:`synthetic` with N training images (test: N/4)
====================== ==================================================================

:func:`batches` iterates mini-batches, optionally gathering into reused buffers.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncalc.errors import DataError, TrainError
from cnncalc.limits import Bound, check_memory
from cnncalc.registry import REQUIRED, Param, Registry

__all__ = [
    "DATA_SOURCES",
    "MNIST_FILES",
    "Dataset",
    "batch_indices",
    "batches",
    "load",
    "load_cifar10",
    "load_mnist",
    "load_npz",
    "read_idx",
    "synthetic",
]

MNIST_ENV = "CNNCALC_MNIST_DIR"

# file -> (MD5 of the original .gz as served by the mirrors (torchvision's list), IDX magic)
MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 2051),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", 2049),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", 2051),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", 2049),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
DOWNLOAD_TIMEOUT_S = 10.0


@dataclass
class Dataset:
    """Train and test arrays of one image-classification data set.

    Attributes
    ----------
    x_train, x_test : ndarray, shape (N, C, H, W), float32
    y_train, y_test : ndarray, shape (N,), int64, values in [0, len(classes))
    classes : list of class names
    name : short description, e.g. ``"mnist"``
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"classes={self.num_classes})")


def check_finite(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` itself, or :class:`DataError` naming ``what`` and the first NaN/inf index (one NaN
    pixel would otherwise train to NaN weights and "acc 0.00%" with exit 0)."""
    from cnncalc.engine.finite import nonfinite_message

    msg = nonfinite_message(what, x)
    if msg is not None:
        raise DataError(msg, hint="fix or drop those examples; cnncalc refuses NaN/inf data")
    return x


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
    with np.errstate(over="ignore"):   # values beyond float32 become inf: check_finite names them
        return np.ascontiguousarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# MNIST


#: the largest IDX file cnncalc reads (decompressed): MNIST's training images are 47 MB
IDX_MAX_BYTES = 1 << 31


def _idx_dims(head: bytes) -> tuple[int, ...]:
    """The sizes an IDX header declares: after the 4-byte magic (whose last byte is the number
    of dimensions), one big-endian 32-bit size per dimension."""
    return tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(head[3]))


def _read_idx_bytes(path: Path) -> bytes:
    """The (decompressed) bytes of an IDX file, read no further than its header claims (so a
    gzip bomb is never unpacked) and refused when it claims more than :data:`IDX_MAX_BYTES`."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\0\0\x08":
            return head + f.read(4)       # too short or not unsigned-byte IDX: read_idx says so
        head += f.read(4 * head[3])
        if len(head) < 4 + 4 * head[3]:
            return head                   # truncated inside the header
        claimed = math.prod(_idx_dims(head))
        if claimed > IDX_MAX_BYTES:
            raise DataError(f"{path}: its header claims {claimed:,} bytes of data; cnncalc "
                            f"reads IDX files of up to {IDX_MAX_BYTES:,} bytes",
                            hint="is it an MNIST-style IDX file? check its header")
        return head + f.read(claimed + 1)   # one byte more tells a file longer than claimed


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not; detected from its first bytes) as a uint8 array.

    Raises
    ------
    DataError
        Unreadable, truncated, wrong magic number, non-uint8 type, or a size that does not match
        the header.
    """
    path = Path(path)
    try:
        raw = _read_idx_bytes(path)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}",
                        hint="the file is damaged; delete it and download it again") from None
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes)",
                        hint="the file is truncated; delete it and download it again")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: magic number {magic} is not an unsigned-byte IDX file "
                        "(expected 2051 for images, 2049 for labels)",
                        hint="is it an MNIST file? the names must match their contents")
    ndim = raw[3]
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path}: magic number {magic}, expected {expect_magic} "
                        f"({'images' if expect_magic == 2051 else 'labels'})",
                        hint="image and label files may have been swapped or renamed")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header",
                        hint="delete it and download it again")
    dims = _idx_dims(raw)
    need = math.prod(dims)            # exact: a header's 32-bit sizes can multiply past int64
    have = len(raw) - header          # at most need + 1: reading stops past the claim
    if have != need:
        more = " or more" if have > need else ""
        raise DataError(f"{path}: header says shape {dims} ({need:,} bytes of data), file has "
                        f"{have:,}{more}",
                        hint="the file is truncated or damaged; delete it and download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_default_dir() -> Path:
    env = os.environ.get(MNIST_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cnncalc" / "mnist"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _download_mnist(folder: Path, stems: list[str], timeout: float) -> list[str]:
    """Fetch the missing ``stems`` (as .gz) into ``folder``; returns the failure reasons."""
    errors: list[str] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return [f"cannot create {folder}: {e}"]
    for stem in stems:
        md5 = MNIST_FILES[stem][0]
        fname = stem + ".gz"
        for mirror in MNIST_MIRRORS:
            url = mirror + fname
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    data = r.read()
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            got = hashlib.md5(data).hexdigest()
            if got != md5:
                errors.append(f"{url}: checksum {got}, expected {md5}")
                continue
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{fname}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, folder / fname)
            except OSError as e:
                errors.append(f"cannot write {folder / fname}: {e}")
                if os.path.exists(tmp):
                    os.unlink(tmp)
                continue
            break
    return errors


def load_mnist(folder: str | os.PathLike | None = None, *, download: bool = True,
               timeout: float = DOWNLOAD_TIMEOUT_S) -> Dataset:
    """MNIST from the four standard IDX files in ``folder`` (default: see :func:`load`).

    Missing files are downloaded (``download=True``) from public mirrors, verified by MD5, with
    ``timeout`` seconds per request. Images become (N, 1, 28, 28) float32 in [0, 1].

    Raises
    ------
    DataError
        Files missing (and not downloadable), corrupt, or not matching each other.
    """
    folder = Path(folder).expanduser() if folder else _mnist_default_dir()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"MNIST location {folder} is not a folder",
                        hint="give the folder that holds the IDX files: mnist:DIR")
    missing = [s for s in MNIST_FILES if _find(folder, s) is None]
    reasons: list[str] = []
    if missing and download:
        reasons = _download_mnist(folder, missing, timeout)
        missing = [s for s in MNIST_FILES if _find(folder, s) is None]
    if missing:
        why = f" (download failed: {reasons[0]})" if reasons else ""
        raise DataError(
            f"MNIST files missing in {folder}: {', '.join(s + '.gz' for s in missing)}{why}",
            hint=f"put the 4 files {', '.join(s + '.gz' for s in MNIST_FILES)} (gzipped or not) "
                 f"into {folder}, or point {MNIST_ENV} / mnist:DIR at the folder that has them")
    arrays = {s: read_idx(_find(folder, s), MNIST_FILES[s][1]) for s in MNIST_FILES}
    out = []
    for split in ("train", "t10k"):
        xs, ys = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        xp = _find(folder, f"{split}-images-idx3-ubyte")
        yp = _find(folder, f"{split}-labels-idx1-ubyte")
        if xs.ndim != 3:
            raise DataError(f"{xp}: images must be 3-D (N, rows, cols); got shape {xs.shape}")
        if ys.ndim != 1:
            raise DataError(f"{yp}: labels must be 1-D; got shape {ys.shape}")
        if len(xs) != len(ys):
            raise DataError(f"{xp} has {len(xs)} images but {yp} has {len(ys)} labels",
                            hint="the files come from different sets; replace them")
        if ys.size and ys.max() > 9:
            raise DataError(f"{yp}: label {int(ys.max())} out of range 0..9")
        out.append((_to_float(xs[:, None]), ys.astype(np.int64)))
    (xtr, ytr), (xte, yte) = out
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"MNIST train images are {xtr.shape[2:]} but test images {xte.shape[2:]}")
    return Dataset(xtr, ytr, xte, yte, [str(i) for i in range(10)], "mnist")


# ------------------------------------------------------------------------------------------------
# CIFAR-10


# The python version of CIFAR-10 is pickled, and a pickle can name any callable to run while it
# loads. The official batches name exactly these: NumPy's array and scalar reconstructors (a
# batch re-saved with NumPy labels holds scalars) and the dtype
# (everything else in them is dicts, lists, ints and strings, which need no global), plus
# ``_codecs.encode``, with which protocol 2 spells a bytes object written by Python 3. Any other
# global is refused before it is imported, so a crafted batch file cannot run code.
_CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})
# An official batch is 30 MiB; refuse anything far larger before reading it.
CIFAR_MAX_FILE_BYTES = 256 << 20
CIFAR_RECORD = 1 + 3 * 32 * 32  # binary version: one label byte, then 3072 pixel bytes (CHW)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and NumPy arrays (see the allow-list)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load global '{module}.{name}': a CIFAR-10 batch holds only arrays, "
                "lists and strings, so this file is not one (and may be crafted to run code)")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id: not a CIFAR-10 batch")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing a missing, unreadable or implausibly large file."""
    try:
        size = path.stat().st_size
        if size > CIFAR_MAX_FILE_BYTES:
            raise DataError(f"{path} is {size:,} bytes; a CIFAR-10 batch is about 30 MB",
                            hint="point cifar10:DIR at the extracted CIFAR-10 folder")
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 file missing: {path}",
                        hint="extract cifar-10-binary.tar.gz (or the python version) and point "
                             "cifar10:DIR at the folder it made") from None
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 file {path}: {e.strerror or e}") from None


def _unpickle_restricted(path: Path) -> dict:
    """One python-version batch, loaded with :class:`_CifarUnpickler` (no code can run)."""
    raw = _read_bounded(path)
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: {e}",
                        hint="use the official CIFAR-10 archive; the binary version "
                             "(data_batch_N.bin) needs no unpickling at all") from None
    except Exception as e:  # damaged pickles raise many kinds of error
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}",
                        hint="the file is damaged; extract the archive again") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict, got "
                        f"{type(d).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _check_cifar(path: Path, data: np.ndarray, labels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise DataError(f"{path}: label {int(labels[bad])} at index {bad} is outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_batch_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle_restricted(path)
    data, labels = d.get("data"), d.get("labels")
    if data is None or labels is None:
        raise DataError(f"{path} lacks 'data' or 'labels'", hint="is it a CIFAR-10 python batch?")
    data = np.asarray(data)
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: 'labels' must be a list of integers") from None
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{path}: data must be uint8 of shape (N, 3072); got {data.dtype} "
                        f"{data.shape}", hint="CIFAR-100 or another format? use npz:FILE")
    return _check_cifar(path, data, labels)


def _cifar_batch_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary-version batch: records of one label byte and 3072 pixel bytes (R, G, B planes)."""
    raw = _read_bounded(path)
    if not raw or len(raw) % CIFAR_RECORD:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte "
                        "records (1 label byte + 3072 pixels)",
                        hint="the file is truncated or not a CIFAR-10 binary batch; "
                             "CIFAR-100's binary files have 2 label bytes and are not supported")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return _check_cifar(path, rec[:, 1:], rec[:, 0].astype(np.int64))


def _cifar_layout(folder: Path) -> tuple[Path, str]:
    """(folder, "bin" | "py"): which of the two official layouts ``folder`` holds."""
    for sub, kind in (("cifar-10-batches-bin", "bin"), ("cifar-10-batches-py", "py")):
        if (folder / sub).is_dir():
            return folder / sub, kind
    if (folder / "data_batch_1.bin").is_file():
        return folder, "bin"
    return folder, "py"


def load_cifar10(folder: str | os.PathLike) -> Dataset:
    """CIFAR-10 from its official archive, binary or python version, extracted in ``folder``.

    * binary version (``cifar-10-batches-bin``): ``data_batch_1.bin`` .. ``data_batch_5.bin``
      and ``test_batch.bin``, each a run of 3073-byte records (label, then the R, G and B
      32x32 planes); class names from ``batches.meta.txt``. Preferred: nothing is unpickled.
    * python version (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` and
      ``test_batch``, read by a restricted unpickler that admits only NumPy arrays, dicts,
      lists, numbers and strings; a file naming any other global is refused unread, so a
      crafted file cannot run code.

    Images become (N, 3, 32, 32) float32 in [0, 1].
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"CIFAR-10 folder {folder} does not exist",
                        hint="point cifar10:DIR at the extracted cifar-10-batches-bin "
                             "(or cifar-10-batches-py) folder")
    folder, kind = _cifar_layout(folder)
    suffix, read = (".bin", _cifar_batch_bin) if kind == "bin" else ("", _cifar_batch_py)
    train = [read(folder / f"data_batch_{i}{suffix}") for i in range(1, 6)]
    xte, yte = read(folder / f"test_batch{suffix}")
    classes = list(CIFAR_CLASSES)
    if kind == "bin" and (folder / "batches.meta.txt").is_file():
        names = [n.strip() for n in _read_bounded(folder / "batches.meta.txt")
                 .decode("utf-8", "replace").splitlines() if n.strip()]
    elif kind == "py" and (folder / "batches.meta").is_file():
        names = _unpickle_restricted(folder / "batches.meta").get("label_names") or []
    else:
        names = []
    if isinstance(names, list) and len(names) == 10:
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    xtr = np.concatenate([b[0] for b in train])
    ytr = np.concatenate([b[1] for b in train])
    return Dataset(_to_float(xtr), ytr, _to_float(xte), yte, classes, "cifar10")


# ------------------------------------------------------------------------------------------------
# npz


def _npz_x(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: {key!r} must be (N, C, H, W) or (N, H, W); got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: {key!r} must be numeric; got dtype {x.dtype}")
    return check_finite(_to_float(x), f"{path}: {key!r}")


def _npz_y(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: {key!r} must have shape ({n},) to match the images; "
                        f"got {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{path}: {key!r} must hold integer class indices")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key!r} must hold integer class indices; got {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{path}: {key!r} has negative labels")
    return y


def load_npz(path: str | os.PathLike, seed: int = 0, test_fraction: float = 1 / 6) -> Dataset:
    """A ``.npz`` with ``x``, ``y`` and optional ``x_test``, ``y_test``, ``classes``.

    Without a test set, a deterministic (by ``seed``) ``test_fraction`` of the rows is split off.
    uint8 images are scaled to [0, 1]; other numbers are kept as float32.
    """
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except Exception as e:
        raise DataError(f"cannot read {path} as .npz: {type(e).__name__}: {e}",
                        hint="save it with np.savez(path, x=..., y=...)") from None
    for k in ("x", "y"):
        if k not in arrays:
            raise DataError(f"{path} has no array {k!r} (has: {', '.join(arrays) or 'none'})",
                            hint="save it with np.savez(path, x=images, y=labels)")
    x = _npz_x(arrays["x"], path, "x")
    y = _npz_y(arrays["y"], len(x), path, "y")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: give both x_test and y_test, or neither")
    if "x_test" in arrays:
        xte = _npz_x(arrays["x_test"], path, "x_test")
        yte = _npz_y(arrays["y_test"], len(xte), path, "y_test")
        if xte.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test images are {xte.shape[1:]}, x images {x.shape[1:]}")
    else:
        if len(x) < 2:
            raise DataError(f"{path}: need at least 2 examples to split off a test set")
        perm = np.random.default_rng(seed).permutation(len(x))
        n_test = max(1, int(round(len(x) * test_fraction)))
        te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        x, y, xte, yte = x[tr], y[tr], x[te], y[te]
    n_cls = int(max(y.max(initial=-1), yte.max(initial=-1))) + 1
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
        if len(classes) < n_cls:
            raise DataError(f"{path}: {len(classes)} class names but labels go up to {n_cls - 1}")
    else:
        classes = [str(i) for i in range(n_cls)]
    return Dataset(x, y, xte, yte, classes, path.stem)


# ------------------------------------------------------------------------------------------------
# synthetic

SYNTHETIC_N = 2000  # training images of plain ``synthetic``
#: ``synthetic:N``: each image is drawn by numpy expressions over the whole batch
SYNTHETIC_N_BOUND = Bound("synthetic:N", 4, 1_000_000, "the images are generated in memory")
SYNTHETIC_CLASSES = ["hstripes", "vstripes", "diag", "antidiag", "disc", "ring", "square",
                     "plus", "cross", "checker"]


def _draw(cls: int, n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """n images (n, h, w) in [0, 1] of pattern ``cls`` with random position/size/phase."""
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    s = min(h, w)
    cy = rng.uniform(0.35, 0.65, (n, 1, 1)).astype(np.float32) * h
    cx = rng.uniform(0.35, 0.65, (n, 1, 1)).astype(np.float32) * w
    r = rng.uniform(0.2, 0.32, (n, 1, 1)).astype(np.float32) * s
    period = rng.uniform(0.18, 0.3, (n, 1, 1)).astype(np.float32) * s
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    k = 2 * np.pi / period
    dy, dx = yy - cy, xx - cx
    thick = np.maximum(1.0, 0.09 * s)
    if cls == 0:
        img = np.sin(k * yy + phase) > 0.3
    elif cls == 1:
        img = np.sin(k * xx + phase) > 0.3
    elif cls == 2:
        img = np.sin(k * (xx + yy) / np.sqrt(2) + phase) > 0.3
    elif cls == 3:
        img = np.sin(k * (xx - yy) / np.sqrt(2) + phase) > 0.3
    elif cls == 4:
        img = dy ** 2 + dx ** 2 <= r ** 2
    elif cls == 5:
        d = np.sqrt(dy ** 2 + dx ** 2)
        img = np.abs(d - r) <= thick * 0.75
    elif cls == 6:
        m = np.maximum(np.abs(dy), np.abs(dx))
        img = np.abs(m - r) <= thick * 0.6
    elif cls == 7:
        img = ((np.abs(dy) <= thick * 0.6) & (np.abs(dx) <= r * 1.2)) | (
            (np.abs(dx) <= thick * 0.6) & (np.abs(dy) <= r * 1.2))
    elif cls == 8:
        img = ((np.abs(dy - dx) <= thick * 0.85) | (np.abs(dy + dx) <= thick * 0.85)) & (
            np.maximum(np.abs(dy), np.abs(dx)) <= r * 1.2)
    else:
        cell = np.maximum(2.0, np.round(period / 2))
        img = ((np.floor((yy + phase) / cell) + np.floor((xx + phase) / cell)) % 2) == 0
    return np.broadcast_to(img, (n, h, w)).astype(np.float32)


def synthetic(n_train: int = 2000, n_test: int = 500, *, seed: int = 0,
              shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
              noise: float = 0.15) -> Dataset:
    """A procedurally generated 10-class image set (no download), deterministic by ``seed``.

    Classes: horizontal, vertical, diagonal and anti-diagonal stripes, disc, ring, square outline,
    plus, cross, checkerboard; each with random position, size, stripe period and phase, random
    contrast, Gaussian pixel noise (std ``noise``), clipped to [0, 1]. With C > 1 each channel
    gets its own random intensity. A small CNN reaches > 90 % test accuracy within a few epochs.
    ``num_classes`` <= 10 takes the first classes. Labels are balanced and shuffled.
    """
    for nm, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TrainError(f"synthetic {nm} must be a positive integer; got {v!r}")
    if not (1 <= int(num_classes) <= len(SYNTHETIC_CLASSES)):
        raise TrainError(f"synthetic num_classes must be in 1..{len(SYNTHETIC_CLASSES)}; "
                         f"got {num_classes}")
    try:
        c, h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise TrainError(f"synthetic shape must be (C, H, W); got {shape!r}") from None
    if c < 1 or h < 8 or w < 8:
        raise TrainError(f"synthetic shape must have C >= 1 and H, W >= 8; got {shape!r}")
    if not (0 <= noise < 10):
        raise TrainError(f"synthetic noise must be in [0, 10); got {noise}")
    # float32 images, and the same again for one class's pattern and noise while drawing
    check_memory((int(n_train) + int(n_test)) * c * h * w * 4 * 2, "the synthetic data set",
                 breakdown=f"{n_train + n_test:,} images of {h}x{w}x{c}",
                 hint="use a smaller synthetic:N")
    rng = np.random.default_rng(seed)
    k = int(num_classes)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % k
        rng.shuffle(y)
        x = np.empty((n, c, h, w), np.float32)
        for cls in range(k):
            idx = np.flatnonzero(y == cls)
            if idx.size == 0:
                continue
            img = _draw(cls, idx.size, h, w, rng)
            contrast = rng.uniform(0.6, 1.0, (idx.size, c, 1, 1)).astype(np.float32)
            x[idx] = img[:, None] * contrast
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(noise)
        np.clip(x, 0.0, 1.0, out=x)
        return x, y

    xtr, ytr = make(int(n_train))
    xte, yte = make(int(n_test))
    return Dataset(xtr, ytr, xte, yte, SYNTHETIC_CLASSES[:k], "synthetic")


# ------------------------------------------------------------------------------------------------
# --data parsing


def _from_synthetic(arg: str, *, seed: int, shape, num_classes: int, **_: Any) -> Dataset:
    n = SYNTHETIC_N
    if arg:
        try:
            n = int(arg)
        except ValueError:
            raise DataError(f"synthetic:N needs an integer N; got {arg!r}",
                            hint="e.g. synthetic:2000") from None
        SYNTHETIC_N_BOUND.check(n)
    return synthetic(n, max(1, n // 4), seed=seed, shape=shape or (1, 28, 28),
                     num_classes=num_classes)


def _from_mnist(arg: str, *, download: bool, **_: Any) -> Dataset:
    return load_mnist(arg or None, download=download)


def _from_cifar10(arg: str, **_: Any) -> Dataset:
    if not arg:
        raise DataError("cifar10 needs a folder: cifar10:DIR",
                        hint="DIR is the extracted cifar-10-batches-bin (or -py) folder")
    return load_cifar10(arg)


def _from_npz(arg: str, *, seed: int, **_: Any) -> Dataset:
    if not arg:
        raise DataError("npz needs a file: npz:FILE")
    return load_npz(arg, seed=seed)


#: ``--data KIND[:ARG]``: each source declares its one argument (what follows the colon)
DATA_SOURCES = Registry("data source", error=DataError)
DATA_SOURCES.add("synthetic", _from_synthetic, help="generated stripes, discs and squares in "
                 "the spec's input shape, no download",
                 params=(Param("n", SYNTHETIC_N, "training images (test: N/4), "
                               f"{SYNTHETIC_N_BOUND.lo}..{SYNTHETIC_N_BOUND.hi:,}"),))
DATA_SOURCES.add("mnist", _from_mnist, help="the four MNIST IDX files (.gz or not), downloaded "
                 "if absent", params=(Param("dir", None, f"folder (default: ${MNIST_ENV}, "
                                                         "else ~/.cache/cnncalc/mnist)"),))
DATA_SOURCES.add("cifar10", _from_cifar10, aliases=("cifar_10",),
                 help="CIFAR-10, binary or python version (read without running code)",
                 params=(Param("dir", REQUIRED, "the extracted batches folder"),))
DATA_SOURCES.add("npz", _from_npz, help="arrays x, y (+ x_test, y_test, classes), no pickle",
                 params=(Param("file", REQUIRED, "the .npz file"),))


def data_forms() -> str:
    """The ``--data`` forms, for help texts and hints: ``synthetic[:N], mnist[:DIR], ...``."""
    forms = []
    for e in DATA_SOURCES:
        p = e.params[0]
        arg = p.name.upper()
        forms.append(f"{e.name}:{arg}" if p.required else f"{e.name}[:{arg}]")
    return ", ".join(forms)


def load(data_arg: str, seed: int = 0, *, download: bool = True,
         shape: tuple[int, int, int] | None = None, num_classes: int = 10) -> Dataset:
    """Load the data set named by a ``--data`` argument ``KIND[:ARG]`` (a source of
    :data:`DATA_SOURCES`) or a path ending in ``.npz``.

    ``shape`` (C, H, W) and ``num_classes`` shape the ``synthetic`` set (a spec's input and
    class count); other sets ignore them.

    Raises
    ------
    DataError
        An unknown form, or a loader's error.
    """
    if not isinstance(data_arg, str) or not data_arg.strip():
        raise DataError(f"data argument must be a non-empty string; got {data_arg!r}",
                        hint=f"e.g. {data_forms()}")
    arg = data_arg.strip()
    kind, _, rest = arg.partition(":")
    if kind not in DATA_SOURCES and arg.lower().endswith(".npz"):
        return load_npz(arg, seed=seed)
    if kind not in DATA_SOURCES:
        raise DataError(f"unknown data source {data_arg!r}",
                        hint=f"use {data_forms()} or a path ending in .npz")
    return DATA_SOURCES.get(kind)(rest, seed=seed, download=download, shape=shape,
                                  num_classes=num_classes)


# ------------------------------------------------------------------------------------------------
# mini-batches


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None,
                  shuffle: bool = True, drop_last: bool = False) -> Iterator[np.ndarray]:
    """Index arrays of successive mini-batches over ``range(n)`` (one pass = one epoch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise TrainError(f"batch_size must be a positive integer; got {batch_size!r}")
    if shuffle:
        if rng is None:
            raise TrainError("shuffling batches needs an rng",
                             hint="pass np.random.default_rng(seed)")
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int,
            rng: np.random.Generator | None = None, shuffle: bool = True, *,
            drop_last: bool = False, reuse_buffers: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` mini-batches, shuffled by ``rng`` when ``shuffle``.

    With ``reuse_buffers=True`` the batches are gathered (``np.take(..., out=)``) into two
    buffers allocated once, so no memory is allocated per batch, but each yielded array is
    overwritten by the next batch: copy it if you keep it. Without shuffling and without reuse,
    the batches are views of ``x``/``y``.
    """
    if len(x) != len(y):
        raise TrainError(f"x has {len(x)} examples but y has {len(y)}")
    n = len(x)
    if not shuffle and not reuse_buffers:
        for idx in batch_indices(n, batch_size, None, False, drop_last):
            yield x[idx[0]:idx[-1] + 1], y[idx[0]:idx[-1] + 1]
        return
    xb = yb = None
    for idx in batch_indices(n, batch_size, rng, shuffle, drop_last):
        if not reuse_buffers:
            yield np.take(x, idx, axis=0), np.take(y, idx, axis=0)
            continue
        if xb is None:
            xb = np.empty((min(batch_size, n),) + x.shape[1:], x.dtype)
            yb = np.empty((min(batch_size, n),) + y.shape[1:], y.dtype)
        m = len(idx)
        xo, yo = xb[:m], yb[:m]
        np.take(x, idx, axis=0, out=xo)
        np.take(y, idx, axis=0, out=yo)
        yield xo, yo
