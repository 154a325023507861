"""The execution engine every intervention sweep runs on.

A :class:`_Write` replaces one site's value at one layer for every row of a batch. Two engines
run batches of writes: ``"direct"`` (local GPT-2, Llama-family and NeoX models) calls the blocks
in torch with the arguments captured from one ordinary forward, starting at the first written
block from the cached residual stream, with the base run's keys/values as a prefix cache for
position bands; ``"nnsight"`` does the same inside one nnsight trace per batch (``.skip()`` over
the blocks before the first write) and also runs remote models. :func:`_engine` picks one and
:func:`_self_check` (in :mod:`.batching`) verifies the direct engine against the model's own
forward once per model and length."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from ..metrics import Metric
from ..model import Model, _get
from ..model.lock import holding_model_lock

# Model types whose blocks can be called one by one with the kwargs captured from a normal
# forward (checked once per call against the cached run anyway).
_DIRECT_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "falcon", "gptj", "opt", "phi", "phi3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "mixtral", "qwen3_moe", "qwen2_moe", "olmo3"}
# Where writing resid_mid by adjusting the attention output is exact: resid_mid = resid_pre + attn_out.
_RESID_MID_WRITABLE = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "phi3", "mixtral", "qwen3_moe", "qwen2_moe", "olmo3", "falcon"}

# ... and keeps the base run's keys/values for that, unless they would take more than this.
_KV_BUDGET = 1 << 30


# --------------------------------------------------------------------------------------------
# Interventions: a write replaces one site's value at one layer for every row of a batch
# --------------------------------------------------------------------------------------------


@dataclass
class _Write:
    """``fn(value) -> new value`` at ``(site, layer)``; values are ``[N, T, d]`` (residual and
    sublayer sites), ``[N, T, n_heads, d_head]`` (``head_out``: the per-head input of the output
    projection, whose image under it is the head's write) or ``[N, T, d_mlp]`` (``mlp_post``)."""

    site: str
    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]

    @property
    def stream(self) -> int | None:
        """Index into the residual stream for resid_pre/resid_post writes (block boundary)."""
        if self.site == "resid_pre":
            return self.layer
        if self.site == "resid_post":
            return self.layer + 1
        return None

    @property
    def start(self) -> int:
        """First block a forward with this write must run."""
        s = self.stream
        return self.layer if s is None else s


def _write_module(model: Model, site: str) -> tuple[str, str, int | None]:
    """(module relative to the block, 'input'|'output', tuple item) that a write of ``site`` edits.
    resid_mid is written through the attention output (resid_mid = resid_pre + attn_out)."""
    if site == "resid_mid":
        r = model.arch.reads["attn_out"]
    else:
        r = model.arch.reads[site]
    return r.module, r.io, r.item


def _order(model: Model, site: str) -> int:
    return model.arch.reads["attn_out" if site == "resid_mid" else site].order


def _as_heads(model: Model | SimpleNamespace, z: torch.Tensor) -> torch.Tensor:
    return z.reshape(*z.shape[:-1], model.n_heads, model.d_head)


def _apply(
    model: Model | SimpleNamespace, site: str, fn: Callable, value: Any, block_input: torch.Tensor | None
) -> Any:
    """The new value of a module's input/output after write ``fn`` (tuple outputs kept);
    ``model`` may be anything with ``n_heads`` and ``d_head`` (inside a remote trace)."""
    if site == "resid_mid":
        a = value[0] if isinstance(value, tuple) else value
        cur = block_input + a
        # a + (new - cur) keeps a bit-exact where nothing changed
        new_a = a + (fn(cur) - cur)
        return (new_a, *value[1:]) if isinstance(value, tuple) else new_a
    if isinstance(value, tuple):
        return (fn(value[0]), *value[1:])
    if site == "head_out":
        return fn(_as_heads(model, value)).reshape(value.shape)
    return fn(value)


def _unembed_path(model: Model) -> str:
    """Module path of the unembedding: the architecture map's, or (where transformers renamed
    it, e.g. NeoX's ``embed_out`` -> ``lm_head``) the model's output embeddings."""
    path = model.arch.unembed or ""
    try:
        _get(model.hf, path)
        return path
    except AttributeError:
        out = model.hf.get_output_embeddings()
        for name, mod in model.hf.named_modules():
            if mod is out and name:
                return name
    raise ValueError(f"cannot find the unembedding of {model.name}")


def _tail(model: Model, h_last: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, vocab]`` from the final residual stream at the last position ``[N, d]``."""
    if model.arch.final_norm is not None:
        h_last = _get(model.hf, model.arch.final_norm)(h_last)
    return _get(model.hf, _unembed_path(model))(h_last)


def _narrow_tail(model: Model, m: Metric) -> tuple[Callable, Metric] | None:
    """For a ``logit_diff`` metric and a plain linear unembedding: a tail computing only the
    metric's vocabulary columns (final norm, then those rows of the unembedding) and the same
    metric re-indexed into them, so patched rows never build vocabulary-sized logits."""
    from ..metrics import LogitDiff

    if type(m) is not LogitDiff or m._ids is None:
        return None
    mod = _get(model.hf, _unembed_path(model))
    if type(mod) is not torch.nn.Linear:
        return None
    a, b = m._ids
    flat = [a] if isinstance(a, int) else list(a)
    flat += [b] if isinstance(b, int) else list(b)
    cols = sorted(set(flat))
    if len(cols) * 4 > model.d_vocab:
        return None
    where = {c: j for j, c in enumerate(cols)}

    def remap(x: int | list[int]) -> int | list[int]:
        return where[x] if isinstance(x, int) else [where[i] for i in x]

    idx = torch.tensor(cols, device=mod.weight.device)
    w = mod.weight[idx]
    bias = mod.bias[idx] if mod.bias is not None else None
    norm = _get(model.hf, model.arch.final_norm) if model.arch.final_norm is not None else None

    def tail(h: torch.Tensor) -> torch.Tensor:
        if norm is not None:
            h = norm(h)
        return torch.nn.functional.linear(h, w, bias)

    sub = LogitDiff(m.correct, m.wrong, _ids=(remap(a), remap(b)))
    sub.name = m.name
    return tail, sub


class _PrefixCache:
    """Stands in for a transformers ``Cache`` in a block call: every layer's keys and values are
    the base run's for positions ``< p0`` (rows picked per batch row) followed by the new ones.
    Nothing is stored, so memory stays at one layer's keys/values at a time."""

    def __init__(
        self,
        kv: tuple[list[torch.Tensor], list[torch.Tensor]],
        rows: torch.Tensor,
        p0: int,
        mid: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.keys, self.values = kv
        self.rows, self.p0 = rows, p0
        self.mid = mid  # keys/values of positions p0.. computed by the caller (one layer)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.keys[layer_idx][self.rows, :, : self.p0].to(key_states.dtype)
        v = self.values[layer_idx][self.rows, :, : self.p0].to(value_states.dtype)
        if self.mid is not None:
            mk, mv = self.mid
            return torch.cat([k, mk, key_states], dim=-2), torch.cat([v, mv, value_states], dim=-2)
        return torch.cat([k, key_states], dim=-2), torch.cat([v, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.p0 + (self.mid[0].shape[-2] if self.mid is not None else 0)


def _swap_cache(args: tuple, kwargs: dict, cache: _PrefixCache) -> tuple[tuple, dict]:
    from transformers.cache_utils import Cache

    return (
        tuple(cache if isinstance(a, Cache) else a for a in args),
        {k: cache if isinstance(v, Cache) else v for k, v in kwargs.items()},
    )


# hf module -> {(length, device, dtype, attention implementation): captured block arguments}
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def _block_args(blocks: Any) -> Iterator[tuple[list[tuple[tuple, dict]], list[torch.Tensor]]]:
    """While open, every call of each block in ``blocks`` appends its arguments after the first,
    ``(args[1:], kwargs)`` (masks, position embeddings, cache), to the first list; the first
    call's hidden-state input goes to the second. The hooks are removed on leaving."""
    captured: list[tuple[tuple, dict]] = []
    first: list[torch.Tensor] = []

    def grab(_m: Any, args: tuple, kwargs: dict) -> None:
        if not captured:
            first.append(args[0])
        captured.append((tuple(args[1:]), dict(kwargs)))

    handles = [b.register_forward_pre_hook(grab, with_kwargs=True) for b in blocks]
    try:
        yield captured, first
    finally:
        for h in handles:
            h.remove()


class _DirectEngine:
    """Runs blocks ``start..L-1`` in torch from a cached residual stream, with hooks for writes
    inside a block, then the final norm and unembedding at the last position only."""

    name = "direct"

    def __init__(self, model: Model):
        self.model = model
        self.blocks = _get(model.hf, model.arch.layers)
        self._args: dict[int, list[tuple[tuple, dict]]] = {}
        self._suffix: dict[tuple[int, int], list[tuple[tuple, dict]] | None] = {}
        self._kv: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.failed: str | None = None

    def _key(self, *extra: Any) -> tuple:
        hf = self.model.hf
        return (
            *extra,
            str(self.model.device),
            next(hf.parameters()).dtype,
            getattr(hf.config, "_attn_implementation", None),
        )

    def _cache_kwarg(self) -> str | None:
        params = inspect.signature(self.model.hf.forward).parameters
        return (
            "cache"
            if "cache" in params
            else "past_key_values"
            if "past_key_values" in params
            else None
        )

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    def prepare_prefix(self, tokens: torch.Tensor) -> bool:
        """Keys and values of every layer for the base prompts ``[B, T]`` (one forward with a
        cache), so that a batch whose edits all start at position ``p0`` (causal models) can
        run positions ``p0..T-1`` only: positions before ``p0`` are identical to the base run."""
        ck = self._cache_kwarg()
        if ck is None or self.failed:
            return False
        n_bytes = (
            2
            * self.model.n_layers
            * tokens.numel()
            * self.model.d_model
            * next(self.model.hf.parameters()).element_size()
        )
        if n_bytes > _KV_BUDGET:
            return False
        from transformers import DynamicCache

        c = DynamicCache(config=self.model.hf.config)
        with torch.no_grad():
            self.model.hf(
                tokens.to(self.model.device),
                use_cache=True,
                **{ck: c},
                **_forward_kwargs(self.model, tokens),
            )
        layers = getattr(c, "layers", None)
        if layers is None or len(layers) != self.model.n_layers:
            return False
        self._kv[tokens.shape[-1]] = ([x.keys for x in layers], [x.values for x in layers])
        return True

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    def suffix_ok(self, tokens: torch.Tensor, p0: int) -> bool:
        """Capture (once per model, length and ``p0``) the block arguments of a forward over
        positions ``p0..T-1`` after a cached prefix, and check that running the blocks with
        them and the cached keys/values reproduces that forward's logits."""
        t = tokens.shape[-1]
        if t not in self._kv or not 0 < p0 < t:
            return False
        if (t, p0) in self._suffix:
            return self._suffix[(t, p0)] is not None
        hf = self.model.hf
        store = _PREPARED.setdefault(hf, {})
        key = self._key("suffix", t, p0)
        if key in store:
            self._suffix[(t, p0)] = store[key]
            return store[key] is not None
        from transformers import DynamicCache

        ck = self._cache_kwarg()
        one = tokens[:1].to(self.model.device)
        captured: list[tuple[tuple, dict]] = []
        first: list[torch.Tensor] = []
        ok = False
        try:
            c = DynamicCache(config=hf.config)
            with torch.no_grad():
                hf(
                    one[:, :p0],
                    use_cache=True,
                    **{ck: c},
                    attention_mask=torch.ones_like(one[:, :p0]),
                )
                with _block_args(self.blocks) as (captured, first):
                    kw = _forward_kwargs(self.model, one)  # attention mask over past + new tokens
                    out = hf(one[:, p0:], use_cache=True, **{ck: c}, **kw)
            if len(captured) == self.model.n_layers:
                self._suffix[(t, p0)] = captured
                ref = out.logits[:, -1].float()
                got = self.forward(
                    one, 0, first[0], [], prefix=(torch.zeros(1, dtype=torch.long), p0)
                ).float()
                ok = float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
        except Exception:  # noqa: BLE001 - any failure just disables the optimisation
            ok = False
        self._suffix[(t, p0)] = captured if ok else None
        store[key] = self._suffix[(t, p0)]
        return ok

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    def prepare(self, tokens: torch.Tensor) -> None:
        """Capture each block's extra arguments (masks, position embeddings) for sequences of
        this length from one batch-1 forward (they broadcast over any batch size), and check
        that running the blocks with them reproduces that forward's logits. Both are remembered
        per model and sequence length, so later calls skip this."""
        t = tokens.shape[-1]
        hf = self.model.hf
        key = self._key(t)
        store = _PREPARED.setdefault(hf, {})
        if key in store:
            self._args[t] = store[key]
            return
        with _block_args(self.blocks) as (captured, first), torch.no_grad():
            one = tokens[:1]
            out = hf(one.to(self.model.device), use_cache=False, **_forward_kwargs(self.model, one))
        if len(captured) != self.model.n_layers:
            self.failed = "could not capture the block arguments"
            return
        self._args[t] = captured
        ref = (out.logits if hasattr(out, "logits") else out[0])[:, -1].float()
        got = self.forward(tokens[:1], 0, first[0], []).float()
        err = float((got - ref).abs().max())
        if err > 1e-4 * max(1.0, float(ref.abs().max())):
            self.failed = f"max logit difference {err:.2e}"
            return
        store[key] = captured

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    @torch.no_grad()
    def forward(
        self,
        tokens: torch.Tensor,
        start: int,
        hidden: torch.Tensor,
        writes: list[_Write],
        prefix: tuple[torch.Tensor, int] | None = None,
        tail: bool = True,
        packed: list[tuple[int, torch.Tensor, torch.Tensor]] | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Final-position logits (``tail=False``: the final residual stream at the last position,
        for :func:`_tail` to turn into logits for many batches at once). With
        ``prefix=(rows, p0)``, ``hidden`` and every write cover positions ``p0..T-1`` only;
        earlier positions come from the base keys/values of ``rows`` (indices into the prepared
        base batch). ``packed``: residual-stream segments that join at different blocks (see
        :meth:`forward_packed`; ``hidden``/``writes`` are then unused, ``tail`` must be False)."""
        model = self.model
        n = model.n_layers
        t = tokens.shape[-1]
        if packed is not None:
            return self.forward_packed(t, packed, prefix[1] if prefix else 0, last_only)
        if prefix is None:
            args = self._args[t]
        else:
            rows, p0 = prefix
            pc = _PrefixCache(self._kv[t], rows.to(model.device), p0)
            args = [_swap_cache(a, kw, pc) for a, kw in self._suffix[(t, p0)]]  # type: ignore[union-attr]
        stream: dict[int, list[Callable]] = {}
        inner: list[_Write] = []
        for w in writes:
            if w.stream is not None:
                stream.setdefault(w.stream, []).append(w.fn)
            else:
                inner.append(w)
        block_in: dict[int, torch.Tensor] = {}
        handles = []
        try:
            for w in inner:
                handles.append(self._hook(w, block_in))
            h = hidden
            for i in range(start, n):
                for fn in stream.get(i, ()):
                    h = fn(h)
                block_in[i] = h
                a, kw = args[i]
                h = self.blocks[i](h, *a, **kw)
                if isinstance(h, tuple):
                    h = h[0]
            for fn in stream.get(n, ()):
                h = fn(h)
            return _tail(model, h[:, -1]) if tail else h[:, -1]
        finally:
            for hd in handles:
                hd.remove()

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    @torch.no_grad()
    def forward_packed(
        self,
        t: int,
        segs: list[tuple[int, torch.Tensor, torch.Tensor]],
        p0: int,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Final residual stream at the last position for rows that start at different blocks:
        ``segs`` = ``(block boundary i, already-written stream [N_i, T - p0, d], base rows
        [N_i])``, sorted by ``i``; each segment joins the batch at block ``i`` (so block ``i``
        runs once for all rows that have reached it, not once per start layer). With ``p0 > 0``,
        positions before ``p0`` come from the base keys/values of each row. Output rows follow
        ``segs`` order."""
        n = self.model.n_layers
        dev = self.model.device
        pc = None
        if p0:
            pc = _PrefixCache(self._kv[t], segs[0][2].to(dev), p0)
            args = [_swap_cache(a, kw, pc) for a, kw in self._suffix[(t, p0)]]  # type: ignore[union-attr]
        else:
            args = self._args[t]
        h: torch.Tensor | None = None
        rows: torch.Tensor | None = None
        k = 0
        for i in range(segs[0][0], n + 1):
            while k < len(segs) and segs[k][0] == i:
                _, hs, rs = segs[k]
                h = hs if h is None else torch.cat([h, hs])
                rows = rs if rows is None else torch.cat([rows, rs])
                k += 1
            if i == n or h is None:
                continue
            if pc is not None:
                pc.rows = rows.to(dev)  # type: ignore[union-attr]
            if i == n - 1 and last_only and h.shape[1] > 1:
                out = self._last_block(t, h, rows.to(dev), p0)  # type: ignore[union-attr]
                # rows that join after the last block (resid_post of the last layer)
                return torch.cat([out, *(hs[:, -1] for _, hs, _ in segs[k:])])
            a, kw = args[i]
            h = self.blocks[i](h, *a, **kw)
            if isinstance(h, tuple):
                h = h[0]
        assert h is not None
        return h[:, -1]

    @holding_model_lock  # no other forward on the model while blocks run (lock.py)
    def last_block_ok(self, tokens: torch.Tensor) -> bool:
        """Whether the last block can run its queries, attention output and MLP at the last
        position only (GPT-2 blocks; keys/values of the other positions computed from the
        block's own ``ln_1`` and ``c_attn``), checked once per model and length."""
        t = tokens.shape[-1]
        if getattr(self.model.hf.config, "model_type", "") != "gpt2" or t < 2:
            return False
        blk = self.blocks[self.model.n_layers - 1]
        if not (hasattr(blk, "ln_1") and hasattr(getattr(blk, "attn", None), "c_attn")):
            return False
        if t not in self._kv or t not in self._args or not self.suffix_ok(tokens, t - 1):
            return False
        store = _PREPARED.setdefault(self.model.hf, {})
        key = self._key("last", t)
        if key not in store:
            ok = False
            try:
                with torch.no_grad():
                    n = self.model.n_layers
                    h = torch.randn(2, t, self.model.d_model, device=self.model.device)
                    h = h.to(next(self.model.hf.parameters()).dtype)
                    rows = torch.zeros(2, dtype=torch.long, device=self.model.device)
                    a, kw = self._args[t][n - 1]  # the full-length block arguments
                    ref = blk(h, *a, **kw)
                    ref = (ref[0] if isinstance(ref, tuple) else ref)[:, -1].float()
                    got = self._last_block(t, h, rows, 0).float()
                    ok = float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
            except Exception:  # noqa: BLE001 - any failure just disables the optimisation
                ok = False
            store[key] = ok
        return bool(store[key])

    def _last_block(self, t: int, h: torch.Tensor, rows: torch.Tensor, p0: int) -> torch.Tensor:
        """The last block's output at the last position for ``h`` = positions ``p0..T-1``."""
        blk = self.blocks[self.model.n_layers - 1]
        att = blk.attn
        kv = att.c_attn(blk.ln_1(h[:, :-1]))
        _, km, vm = kv.split(kv.shape[-1] // 3, dim=2)
        shape = (*km.shape[:-1], -1, att.head_dim)
        mid = (km.view(shape).transpose(1, 2), vm.view(shape).transpose(1, 2))
        pc = _PrefixCache(self._kv[t], rows, p0, mid)
        a, kw = _swap_cache(*self._suffix[(t, t - 1)][-1], pc)  # type: ignore[index]
        out = blk(h[:, -1:], *a, **kw)
        return (out[0] if isinstance(out, tuple) else out)[:, -1]

    def _hook(self, w: _Write, block_in: dict[int, torch.Tensor]) -> Any:
        model = self.model
        rel, io, _ = _write_module(model, w.site)
        mod = _get(self.blocks[w.layer], rel)
        if io == "output":

            def post(_m: Any, _args: Any, out: Any) -> Any:
                return _apply(model, w.site, w.fn, out, block_in.get(w.layer))

            return mod.register_forward_hook(post)

        def pre(_m: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                return (_apply(model, w.site, w.fn, args[0], None), *args[1:]), kwargs
            k = next(iter(kwargs))
            return args, {**kwargs, k: _apply(model, w.site, w.fn, kwargs[k], None)}

        return mod.register_forward_pre_hook(pre, with_kwargs=True)


class _NNsightEngine:
    """The same forward inside one nnsight trace per batch: blocks before ``start`` are skipped
    (``.skip(cached residual)``), writes are assignments to envoys, and only final-position
    logits are kept (``logits_to_keep=1`` where the model takes it)."""

    name = "nnsight"

    def __init__(self, model: Model):
        self.model = model

    def prepare(self, tokens: torch.Tensor) -> None:
        pass

    def forward(
        self, tokens: torch.Tensor, start: int, hidden: torch.Tensor, writes: list[_Write]
    ) -> torch.Tensor:
        model = self.model
        plan = self._plan(start, hidden, writes)
        with (
            torch.no_grad(),
            model.nn.trace(
                tokens.to(model.device), remote=model.remote, **_forward_kwargs(model, tokens)
            ),
        ):
            logits = _run_plan(plan).save()
        return logits

    def forward_many(
        self, calls: list[tuple[torch.Tensor, int, torch.Tensor, list[_Write]]]
    ) -> list[torch.Tensor]:
        """:meth:`forward` of each ``(tokens, start, hidden, writes)``, all traces in one
        ``session``: one remote job for a whole sweep instead of one per batch."""
        model = self.model
        runs = [
            (tokens.to(model.device), _forward_kwargs(model, tokens), self._plan(start, hidden, writes))
            for tokens, start, hidden, writes in calls
        ]
        nn = model.nn
        with torch.no_grad(), nn.session(remote=model.remote):
            outs = _save([])
            for toks, kw, plan in runs:
                with nn.trace(toks, **kw):
                    outs.append(_run_plan(plan).save())
        return list(outs)

    def _plan(self, start: int, hidden: torch.Tensor, writes: list[_Write]) -> tuple:
        """Everything a trace of :func:`_run_plan` names (envoys, plain values, the writes'
        functions), never the Model: a remote request ships what the trace body names."""
        model = self.model
        n = model.n_layers
        stream: dict[int, list[Callable]] = {}
        inner: dict[int, list[_Write]] = {}
        for w in writes:
            if w.stream is not None:
                stream.setdefault(w.stream, []).append(w.fn)
            else:
                inner.setdefault(w.layer, []).append(w)
        h0 = hidden
        for fn in stream.pop(start, ()):
            h0 = fn(h0)
        dims = SimpleNamespace(n_heads=model.n_heads, d_head=model.d_head)
        skipped = [model._module(j, "") for j in range(start)]
        first = model._module(0, "") if start == 0 and h0 is not hidden else None
        steps = []
        for i in range(start, n):
            layer_writes = sorted(inner.get(i, []), key=lambda w: _order(model, w.site))
            groups = []
            k = 0
            while k < len(layer_writes):
                rel, io, _ = _write_module(model, layer_writes[k].site)
                group = [
                    w for w in layer_writes[k:] if _write_module(model, w.site)[:2] == (rel, io)
                ]
                k += len(group)
                groups.append((model._module(i, rel), io, [(w.site, w.fn) for w in group]))
            needs_x = any(w.site == "resid_mid" for w in layer_writes)
            steps.append((i == start, model._module(i, ""), stream.get(i, []), needs_x, groups))
        last = model._module(n - 1, "")
        final = stream.get(n, []) if start < n else []
        unembed = _get(model.nn, _unembed_path(model), envoy=True)
        # blocks that return a tuple (BLOOM, Falcon) are skipped with a tuple and their final
        # output is written back as one
        tup = model.arch.reads["resid_post"].item is not None
        return (h0, skipped, first, steps, last, final, dims, unembed, tup)


def _save(obj: Any) -> Any:
    import nnsight

    return nnsight.save(obj)


def _run_plan(plan: tuple) -> Any:
    """The nnsight engine's trace body (called inside a trace): skip the blocks before the
    start with the cached residual, apply the writes, return the final-position logits."""
    h0, skipped, first, steps, last, final, dims, unembed, tup = plan
    for block in skipped:
        block.skip((h0, None) if tup else h0)
    if first is not None:
        first.input = h0
    for at_start, block, fns, needs_x, groups in steps:
        # the block's input: h0 at the start block (skipped blocks return it, or it was set
        # above); read from the trace further on, when a write needs it
        x = h0 if at_start else None
        if fns:
            x = block.input
            for fn in fns:
                x = fn(x)
            block.input = x
        if needs_x and x is None:
            x = block.input
        for env, io, group in groups:
            v = env.output if io == "output" else env.input
            for site, fn in group:
                v = _apply(dims, site, fn, v, x)
            if io == "output":
                env.output = v
            else:
                env.input = v
    if final:
        out = last.output
        v = out[0] if tup else out
        for fn in final:
            v = fn(v)
        last.output = (v, *out[1:]) if tup else v
    return unembed.output[:, -1]


def _forward_kwargs(model: Model, tokens: torch.Tensor) -> dict[str, Any]:
    """Keyword arguments for a forward over ``tokens`` (no padding): an all-ones attention mask
    (so transformers does not warn about padding when BOS is also the pad token) and
    ``logits_to_keep=1`` (final-position logits only) where the model takes it."""
    kw: dict[str, Any] = {
        "attention_mask": torch.ones(tokens.shape, dtype=torch.long, device=model.device)
    }
    try:
        params = inspect.signature(model.hf.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return kw
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1
    return kw


def _engine(model: Model, engine: str) -> _DirectEngine | _NNsightEngine:
    if engine not in ("auto", "direct", "nnsight"):
        raise ValueError(f"engine must be 'auto', 'direct' or 'nnsight', got {engine!r}")
    direct_ok = not model.remote and getattr(model.hf.config, "model_type", "") in _DIRECT_TYPES
    if engine == "direct" and not direct_ok:
        raise ValueError(
            f"the direct engine supports local {', '.join(sorted(_DIRECT_TYPES))} models; "
            f"{model.name} is {'remote' if model.remote else model.hf.config.model_type}; use engine='nnsight'"
        )
    if engine == "nnsight" or (engine == "auto" and not direct_ok):
        return _NNsightEngine(model)
    return _DirectEngine(model)
