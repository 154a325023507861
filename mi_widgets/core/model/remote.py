"""Running traces on NDIF: the ``remote`` switch of :func:`~mi_widgets.load`, one job per sweep,
and a recorder of what each job sends.

``remote`` is nnsight's own switch, passed through to every ``trace``/``session``/``generate``:

- ``False``: everything runs here, on the model's weights.
- ``True``: the model is built on the meta device (config and tokenizer only, no weights) and
  every trace is serialised and sent to NDIF (``nnsight.CONFIG.API.APIKEY`` must hold a key).
- ``"local"``: nnsight's LocalSimulationBackend: each trace is serialised exactly as for
  ``True``, deserialised with this package's modules hidden (as on the server) and run here, on
  real local weights. A method that gives the same numbers under ``"local"`` as locally sends
  nothing that the server could not run.

Inside a remote trace only ``.save()``\\ d values come back, and the block is shipped as source
plus the variables it names, so method code keeps its trace bodies free of the ``Model`` wrapper
(whose tokenizer would be pickled into every request) and of large local tensors it does not need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REMOTE_VALUES = (False, True, "local")


def check_remote(remote: Any) -> bool | str:
    """Validate a ``remote`` argument: ``False``, ``True`` or ``"local"``."""
    if remote is None:
        return False
    if isinstance(remote, bool) or remote == "local":
        if remote:
            _ship_by_value()
        return remote
    raise ValueError(
        f"remote must be False, True (run on NDIF) or 'local' (nnsight's local simulation of a "
        f"remote run), got {remote!r}"
    )


def _ship_by_value() -> None:
    """Send this package's functions and classes with each request as source (the server has
    torch, transformers and nnsight, not mi_widgets). nnsight does this by itself only for
    modules outside site-packages; a pip-installed mi_widgets is inside."""
    from nnsight.ndif import register

    register("mi_widgets")



def server_module(envoy: Any) -> Any:
    """The torch module behind ``envoy``, for a trace body that calls it directly: tagged so that
    a request refers to the server's copy. nnsight tags a module only when its envoy is pickled;
    a bare module named in a trace body would otherwise travel by value (with meta weights under
    ``remote=True``)."""
    module = envoy._module
    module._persistent_id = f"Module:{envoy.path}"
    return module


def require_local(model: Any, what: str, alternative: str) -> None:
    """Raise ``ValueError`` before any work if ``model`` runs remotely and ``what`` cannot."""
    if getattr(model, "remote", False):
        raise ValueError(
            f"{what} runs on local models only, not on {model.name} (remote={model.remote!r}): {alternative}"
        )


def session(model: Any) -> Any:
    """One remote job for many traces: ``model.nn.session(remote=...)`` for a remote model (its
    inner traces run inside that job), a no-op context for a local one."""
    if getattr(model, "remote", False):
        return model.nn.session(remote=model.remote)
    return contextlib.nullcontext()


def trace_remote(model: Any, in_session: bool) -> bool | str:
    """The ``remote=`` for a trace: the model's switch, or ``False`` inside a remote session
    (the session is the job; its traces must not open jobs of their own)."""
    return False if in_session else model.remote


@dataclass
class Jobs:
    """What :func:`record_jobs` saw: one entry per request serialised for NDIF (or for the
    local simulation), with its payload size in bytes."""

    sizes: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def __repr__(self) -> str:
        mean = self.total_bytes / self.count if self.count else 0
        return f"Jobs(count={self.count}, total_bytes={self.total_bytes:,}, mean_bytes={mean:,.0f})"


@contextlib.contextmanager
def record_jobs() -> Iterator[Jobs]:
    """Count the remote jobs (serialised requests) made inside the block and their sizes:

    >>> with record_jobs() as jobs:
    ...     mw.activation_patching(remote_model, clean, corrupt, metric=m)
    >>> jobs.count, jobs.total_bytes
    """
    from nnsight.schema.request import RequestModel

    jobs = Jobs()
    original = RequestModel.__dict__["serialize"]
    func = original.__func__

    def serialize(cls: Any, tracer: Any, compress: bool = False) -> bytes:
        blob = func(cls, tracer, compress)
        jobs.sizes.append(len(blob))
        return blob

    RequestModel.serialize = classmethod(serialize)  # type: ignore[method-assign]
    try:
        yield jobs
    finally:
        RequestModel.serialize = original  # type: ignore[method-assign]
