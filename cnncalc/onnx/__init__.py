"""ONNX import and export, and reading PyTorch modules.

Each layer class declares its own ONNX mapping (``onnx_op``/``onnx_attrs``, or ``to_onnx`` and
``from_onnx``); this package holds the machinery around them:

* :mod:`cnncalc.onnx.export`: graph (+ weights, + a checkpoint's preprocessing) → ``ModelProto``;
* :mod:`cnncalc.onnx.importer`: ``.onnx`` file → spec text (+ weights), which
  :func:`cnncalc.spec.load` builds like any spec;
* :mod:`cnncalc.onnx.torch_import`: a ``torch.nn.Module`` → spec text, through ``torch.fx``.

Importing this package imports neither onnx nor numpy; :func:`require` does, with a one-line
message naming the pip command when the extra is missing.
"""
from __future__ import annotations

from cnncalc.errors import CnnCalcError

#: opset written by default (onnxruntime 1.14+ runs it)
DEFAULT_OPSET = 17


class InteropError(CnnCalcError):
    """An ONNX or PyTorch model cnncalc cannot read or write."""


def require(module: str = "onnx"):
    """Import ``module`` (``onnx``, ``onnxruntime`` or ``torch``) or explain how to get it."""
    from importlib import import_module

    extra = {"onnx": "onnx", "onnxruntime": "test", "torch": "torch"}.get(module, module)
    try:
        return import_module(module)
    except ImportError:
        raise InteropError(f"{module} is not installed",
                           hint=f'pip install "cnncalc[{extra}]"') from None


__all__ = ["DEFAULT_OPSET", "InteropError", "require"]
