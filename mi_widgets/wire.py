"""Python ⇄ browser array encoding (see docs/widget_protocol.md).

Arrays travel as ``{"dtype", "shape", "buffer"}`` dicts whose buffer is sent as a binary
buffer by ipywidgets, never as JSON lists of floats. ``float16`` halves the bytes of float32
and keeps ~3 significant digits, enough for colour and hover; ``uint8`` quantisation with a
scale and offset quarters them where 1/255 of the range is enough (attention patterns).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_DTYPES = {"float16", "float32", "int32", "int16", "uint16", "uint8"}


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().to("cpu")
        if str(array.dtype) == "torch.bfloat16":
            array = array.float()
        array = array.numpy()
    return np.asarray(array)


def encode(array: Any, dtype: str = "float32") -> dict:
    """Encode an array as a wire dict with a binary buffer.

    ``dtype`` is the dtype on the wire. Float values beyond float16's range are clipped
    to ±65504 rather than sent as inf.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"wire dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    arr = _to_numpy(array)
    if dtype == "float16":
        arr = np.clip(arr.astype(np.float32), -65504.0, 65504.0)
    arr = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    return {"dtype": dtype, "shape": [int(s) for s in arr.shape], "buffer": arr.tobytes()}


def quantize(array: Any, bits: int = 8) -> dict:
    """Encode a float array as uint8 (``bits=8``) or uint16 (``bits=16``) with scale/offset.

    ``value ≈ offset + scale * q``; the error is at most ``scale / 2``.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    arr = _to_numpy(array).astype(np.float64)
    lo = float(arr.min()) if arr.size else 0.0
    hi = float(arr.max()) if arr.size else 0.0
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels if hi > lo else 1.0
    q = np.rint((arr - lo) / scale).clip(0, levels)
    wire = encode(q, "uint8" if bits == 8 else "uint16")
    wire["scale"] = scale
    wire["offset"] = lo
    return wire


def decode(wire: dict) -> np.ndarray:
    """Inverse of :func:`encode` / :func:`quantize` (accepts ``buffer`` or ``b64``)."""
    raw = wire["buffer"] if "buffer" in wire else base64.b64decode(wire["b64"])
    arr = np.frombuffer(bytes(raw), dtype=np.dtype(wire["dtype"]).newbyteorder("<"))
    arr = arr.reshape(wire["shape"])
    if "scale" in wire:
        return (wire["offset"] + wire["scale"] * arr.astype(np.float64)).astype(np.float32)
    return arr.astype(np.float32) if arr.dtype.kind == "f" else arr.astype(np.int64)


def to_static(obj: Any) -> Any:
    """Replace every binary ``buffer`` in a (nested) state with base64 text, for HTML export."""
    if isinstance(obj, dict):
        if "buffer" in obj and "dtype" in obj:
            out = {k: v for k, v in obj.items() if k != "buffer"}
            out["b64"] = base64.b64encode(bytes(obj["buffer"])).decode("ascii")
            return out
        return {k: to_static(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_static(v) for v in obj]
    return obj


def nbytes(obj: Any) -> int:
    """Bytes of binary buffers in a (nested) state: what a view costs on the wire."""
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    return 0
