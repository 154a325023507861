"""Input checks shared by every public entry point, run first (before any forward pass), so that
a wrong argument raises a ``TypeError``/``ValueError`` naming what was wrong and what to pass."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch


def check_model(model: Any, what: str = "model") -> None:
    """``model`` must be a :class:`~mi_widgets.core.model.Model` (``mw.load(...)`` / ``mw.wrap``)."""
    from .model import Model

    if not isinstance(model, Model):
        raise TypeError(
            f"{what} must be a mi_widgets Model (mw.load(...) or mw.wrap(hf, tokenizer)), "
            f"got {type(model).__name__}"
        )


def check_vector(v: Any, width: int | None, what: str, site: str | None = None) -> torch.Tensor:
    """A real, finite 1-D vector of ``width`` entries (a tensor, array or list of numbers);
    returns it as a float32 tensor. Strings, complex values, NaN/inf and wrong shapes are refused."""
    if isinstance(v, (str, bytes)):
        raise TypeError(f"{what} must be a vector of numbers (a tensor of shape [{width or 'd'}]), got the string {v!r}")
    if v is None or isinstance(v, (bool, dict, set)):
        raise TypeError(f"{what} must be a vector of numbers (a tensor of shape [{width or 'd'}]), got {type(v).__name__}")
    try:
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{what} must be a vector of numbers, got {type(v).__name__} ({e})") from None
    if t.is_complex():
        raise TypeError(f"{what} is complex; pass a real vector (its imaginary part would be dropped)")
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"{what} must hold real numbers, got dtype {t.dtype}")
    if t.ndim > 1 and all(n == 1 for n in t.shape[:-1]):
        t = t.reshape(-1)  # [1, d]: one vector
    if t.ndim != 1:
        raise ValueError(f"{what} must be 1-D (shape [{width or 'd'}]), got shape {list(t.shape)}")
    if width is not None and t.shape[0] != width:
        where = f"{site} has {width} units per token" if site else f"the site is {width} wide"
        raise ValueError(f"{what} has {t.shape[0]} entries but {where}; pass a vector of shape [{width}]")
    t = t.detach().float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or inf; pass finite numbers")
    return t


def check_str_list(x: Any, what: str, *, allow_empty: bool = False) -> list[str]:
    """A list (or tuple) of strings; a bare ``str`` is refused rather than iterated per character."""
    if isinstance(x, str):
        raise TypeError(f"{what} must be a list of strings, got the single string {x!r}; wrap it: [{x!r}]")
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(x).__name__}")
    if not x and not allow_empty:
        raise ValueError(f"{what} is empty; pass at least one string")
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(t).__name__}")
    return list(x)


def check_each_text(x: list | tuple, what: str) -> list[str]:
    """Every element of ``x`` a non-empty ``str`` (``ValueError`` naming ``what[i]`` otherwise)."""
    for i, t in enumerate(x):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}] must be a str, got {type(t).__name__}")
        if t == "":
            raise ValueError(f"{what}[{i}] is empty; give at least one character of text")
    return list(x)


def check_int_list(x: Any, what: str) -> list[int]:
    """A list of ints; a bare ``str`` such as ``'01'`` is refused rather than iterated."""
    if isinstance(x, str):
        raise TypeError(f"{what} must be an int or a list of ints, got the string {x!r}")
    return list(x)


def check_positive_int(x: Any, what: str, *, minimum: int = 1) -> int:
    """An int >= ``minimum`` (bools and floats refused)."""
    if isinstance(x, bool) or not isinstance(x, Integral):
        raise TypeError(f"{what} must be an int >= {minimum}, got {type(x).__name__} {x!r}")
    if x < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {x}")
    return int(x)


def check_finite(x: Any, what: str) -> float:
    """A real, finite number (bools refused)."""
    if isinstance(x, bool) or not isinstance(x, Real):
        raise TypeError(f"{what} must be a real number, got {type(x).__name__} {x!r}")
    if not math.isfinite(float(x)):
        raise ValueError(f"{what} must be finite, got {x!r}")
    return float(x)


def check_numbers(xs: Any, what: str) -> list[float]:
    """A list of finite real numbers; a bare string (``'12'``) is refused rather than iterated."""
    if isinstance(xs, (str, bytes)):
        raise TypeError(f"{what} must be a list of numbers, got the string {xs!r}")
    try:
        items = list(xs)
    except TypeError:
        raise TypeError(f"{what} must be a list of numbers, got {type(xs).__name__}") from None
    return [check_finite(c, f"{what}[{i}]") for i, c in enumerate(items)]


def check_dictionary_width(dictionary: Any, model: Any, what: str = "dictionary") -> None:
    """``dictionary`` is SAE-like and reads a site of the model's width (a wrong-width SAE
    fails before any forward)."""
    missing = [a for a in ("encode", "d_in", "d_sae", "site", "layer") if not hasattr(dictionary, a)]
    if missing:
        raise TypeError(
            f"{what} must be an SAE, transcoder or crosscoder (mw.train_sae, mw.load_sae), "
            f"got {type(dictionary).__name__}"
        )
    d_in = getattr(dictionary, "d_in", None)
    site = getattr(dictionary, "site", None)
    if not isinstance(d_in, int) or not isinstance(site, str):
        return
    try:
        width = model.site_width(site)
    except ValueError:
        return
    if d_in != width:
        raise ValueError(
            f"{what} reads {site} with d_in={d_in}, but {model.name}'s {site} is {width} wide; "
            "use a dictionary trained on this model"
        )


def check_index(x: Any, n: int, what: str) -> int:
    """An int index in ``0..n-1`` (an int, a numpy int or a one-element integer tensor; bools
    and floats refused)."""
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        x = int(x.item())
    if isinstance(x, bool) or not isinstance(x, Integral):
        raise TypeError(f"{what} must be an int in 0..{n - 1}, got {type(x).__name__} {x!r}")
    if not 0 <= x < n:
        raise ValueError(f"{what} {x} is out of range 0..{n - 1}")
    return int(x)
