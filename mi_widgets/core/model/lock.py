"""One re-entrant lock per :class:`~mi_widgets.core.model.model.Model`: every forward on it, by
nnsight or by torch directly, runs while holding it.

Why: nnsight installs a controller on every module of the model for good, and a trace switches
the shared interleaver on for the whole model. A second forward started from another thread
while a trace runs (a FeatureDashboard pass or a PatchingGrid sweep in the background, a click
in the notebook) lands in the first trace's interleaver: ``ValueError: parent cannot be on a
different thread``, missing values, or worse. Serialising the forwards makes both finish with
the numbers they would have had one after the other.

Installed in one place (:func:`install`, called by ``Model.__init__``):

- ``model.nn.trace`` (which ``generate`` also goes through) and ``model.nn.session`` return
  tracers whose ``with`` block holds the lock from ``__enter__`` to ``__exit__``, released on
  exceptions too;
- ``model.hf(...)`` (every torch-direct forward and ``hf.generate`` step) holds it for the call;
- code that runs modules one by one without either (the direct patching engine) takes it with
  ``with model.lock:`` or the :func:`holding_model_lock` decorator.

The lock is re-entrant, so a method holding it may call another that takes it again. While a
thread waits for it, the callbacks registered with :func:`on_wait` in that thread are told
(views show "waiting for the model").
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


@contextmanager
def on_wait(callback: Callable[[bool], None]) -> Iterator[None]:
    """While the block runs in this thread, ``callback(True)`` is called when a model lock
    must wait for another thread, and ``callback(False)`` once it is acquired (or the wait
    ends with an exception)."""
    stack: list = _local.__dict__.setdefault("callbacks", [])
    stack.append(callback)
    try:
        yield
    finally:
        stack.remove(callback)


def _notify(waiting: bool) -> None:
    for cb in list(_local.__dict__.get("callbacks", ())):
        try:
            cb(waiting)
        except Exception:  # noqa: BLE001 - a view's status update must never break a forward
            pass


class ModelLock:
    """A re-entrant lock that tells this thread's :func:`on_wait` callbacks when it waits."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            _notify(True)
            try:
                self._lock.acquire()
            finally:
                _notify(False)
        self._owner = threading.get_ident()
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
        self._lock.release()

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __reduce__(self) -> tuple:
        # a remote request may pickle what a trace refers to: a copy gets a fresh lock
        return (ModelLock, ())

    @property
    def busy(self) -> bool:
        """Whether another thread holds the lock now."""
        owner = self._owner
        return owner is not None and owner != threading.get_ident()

    @property
    def held(self) -> bool:
        """Whether this thread holds the lock."""
        return self._owner == threading.get_ident()


# -- nnsight tracers -----------------------------------------------------------------------

_LOCKED_CLASSES: dict[type, type] = {}


class _LockedTracer:
    """Mixed in front of an nnsight tracer class: the ``with`` block holds the model lock.

    ``Tracer.capture`` and ``skip_context`` find the user's frame two frames up, so this
    ``__enter__`` calls them itself (it is then the frame they skip) instead of calling
    ``super().__enter__()``, which would put one frame more in between."""

    _mw_lock: ModelLock

    def __enter__(self) -> Any:
        from nnsight.tracing.tracer import skip_context, skippable

        lock = self.__dict__["_mw_lock"]
        lock.acquire()
        try:
            self.capture()  # type: ignore[attr-defined]
            if skippable(self.node):  # type: ignore[attr-defined]
                skip_context(self)  # type: ignore[arg-type]
        except BaseException:
            lock.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)  # type: ignore[misc]
        finally:
            self.__dict__["_mw_lock"].release()

    def __reduce_ex__(self, protocol: int) -> tuple:
        # A remote request pickles its tracer: it travels as nnsight's own tracer class, without
        # the lock (whose thread-local state does not pickle), which stays here.
        base = next(
            c for c in type(self).__mro__
            if c.__module__.startswith("nnsight") and not issubclass(c, _LockedTracer)
        )
        state = self.__getstate__()  # type: ignore[attr-defined]
        state.pop("_mw_lock", None)
        return (object.__new__, (base,), state)


def _locked_tracer(tracer: Any, lock: ModelLock) -> Any:
    from nnsight.tracing.tracer import Tracer

    cls = type(tracer)
    if not isinstance(tracer, Tracer) or "__enter__" in vars(cls) or isinstance(tracer, _LockedTracer):
        return tracer  # an editing tracer (runs nothing), or already locked
    sub = _LOCKED_CLASSES.get(cls)
    if sub is None:
        sub = type(cls.__name__, (_LockedTracer, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        _LOCKED_CLASSES[cls] = sub
    tracer.__class__ = sub
    tracer.__dict__["_mw_lock"] = lock
    return tracer


def _entry(method: Callable, lock: ModelLock) -> Callable:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:  # a direct call (trace=False) runs the model here
            out = method(*args, **kwargs)
        return _locked_tracer(out, lock)

    locked._mw_locked = True  # type: ignore[attr-defined]
    return locked


def _is_traceable(attr: Any) -> bool:
    """Whether a class attribute is a method wrapped by nnsight's ``@traceable`` (functools.wraps
    copies the method's names, so the wrapper's code tells)."""
    code = getattr(attr, "__code__", None)
    if code is None or not hasattr(attr, "__wrapped__"):
        return False
    return "traceable" in getattr(code, "co_qualname", "") or (
        code.co_name == "wrapper" and code.co_filename.replace("\\", "/").endswith("intervention/envoy.py")
    )


def _traceable_entry(nn: Any, raw: Callable, lock: ModelLock) -> Callable:
    """nnsight's ``@traceable`` wrapper (``model.nn.generate``), deciding under the lock.

    nnsight's own wrapper runs the method directly when the model is already interleaving,
    taken to mean "called inside a trace"; but the interleaver is shared by all threads, so
    while another thread traces, ``with model.nn.generate(...) as t:`` got a tensor instead of a
    tracer. Here that check is made holding the lock (so a trace in progress is this thread's),
    and, as there, ``tracer.capture()`` is called from this frame, one below the user's."""
    from nnsight.tracing.tracer import WithBlockNotFoundError

    @functools.wraps(raw)
    def locked(*args: Any, **kwargs: Any) -> Any:
        fn = raw.__get__(nn, type(nn))
        with lock:
            if nn.interleaver.interleaving:  # inside this thread's own trace
                return fn(*args, **kwargs)
        tracer = nn.trace(*args, fn=fn, **kwargs)
        try:
            tracer.capture()
        except WithBlockNotFoundError:  # a direct call: run it now
            with lock:
                return nn.interleave(fn, *args, **kwargs)
        return tracer

    locked._mw_locked = True  # type: ignore[attr-defined]
    return locked


# -- torch modules -------------------------------------------------------------------------

_LOCKED_MODULES: dict[type, type] = {}


def _lock_calls(module: Any, lock: ModelLock) -> None:
    """Make ``module(...)`` hold ``lock`` for the call: the instance gets a subclass of its
    class (same name, module and qualname, so transformers' checks and save_pretrained see the
    same class) whose ``__call__`` takes the lock. Dunder methods are looked up on the type,
    and nnsight owns the instance's ``forward`` slot, so this is the one place left."""
    cls = type(module)
    if getattr(cls, "_mw_locked_calls", False):
        module.__dict__["_mw_lock"] = lock
        return
    sub = _LOCKED_MODULES.get(cls)
    if sub is None:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            lk = self.__dict__.get("_mw_lock")
            if lk is None:
                return cls.__call__(self, *args, **kwargs)
            with lk:
                return cls.__call__(self, *args, **kwargs)

        def __reduce_ex__(self: Any, protocol: Any) -> Any:
            # pickle (torch.save of the module) as the original class: this one is not importable
            rv = cls.__reduce_ex__(self, protocol)
            if isinstance(rv, tuple) and len(rv) > 1 and isinstance(rv[1], tuple) and rv[1][:1] == (sub,):
                rv = (_new_of, (cls,), *rv[2:])
            return rv

        sub = type(cls.__name__, (cls,), {
            "__call__": __call__, "__reduce_ex__": __reduce_ex__, "_mw_locked_calls": True,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        })
        _LOCKED_MODULES[cls] = sub
    module.__class__ = sub
    module.__dict__["_mw_lock"] = lock


def _new_of(cls: type) -> Any:
    """An empty instance of ``cls`` (unpickling a locked module as its original class)."""
    return cls.__new__(cls)


def install(model: Any) -> ModelLock:
    """Give ``model`` (a :class:`Model`) its lock and route every forward through it; returns
    the lock (also ``model.lock``). Idempotent."""
    existing = model.__dict__.get("lock")
    if isinstance(existing, ModelLock):
        return existing
    hf = getattr(model, "hf", None)
    # Two Models over one torch module (wrap() twice) share nnsight's per-module state: one lock
    shared = hf.__dict__.get("_mw_lock") if hf is not None else None
    lock = shared if isinstance(shared, ModelLock) else ModelLock()
    nn = model.nn
    for name in ("trace", "session"):
        method = getattr(nn, name, None)
        if callable(method) and not getattr(method, "_mw_locked", False):
            # Envoy.__setattr__ registers modules only; a function is set as a plain attribute
            object.__setattr__(nn, name, _entry(method, lock))
    for name, attr in vars(type(nn)).items():  # generate, ...: nnsight's @traceable methods
        if _is_traceable(attr):
            object.__setattr__(nn, name, _traceable_entry(nn, attr.__wrapped__, lock))
    if hf is not None:
        _lock_calls(hf, lock)
    model.lock = lock
    return lock


def model_lock(model: Any) -> ModelLock:
    """The model's lock (installed on first use for a Model built without ``__init__``)."""
    lock = model.__dict__.get("lock")
    return lock if isinstance(lock, ModelLock) else install(model)


def holding_model_lock(method: Callable) -> Callable:
    """Decorate a method of an object with a ``model`` attribute: the call holds its lock."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with model_lock(self.model):
            return method(self, *args, **kwargs)

    return locked
