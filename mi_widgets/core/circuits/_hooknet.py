"""The edge graph's forward passes on the Hugging Face modules themselves, with hooks: every
family whose heads write additively into the residual stream (Llama-style GQA/RMSNorm/gated-MLP
models, GPT-NeoX and the other parallel-attention blocks, OPT, Phi, BLOOM, Falcon, MoE models).

The same interface as the functional GPT-2 forward (:class:`._graph.Net`): ``embed``, ``run``
(edge masks, recording sender outputs) and ``run_grad`` (per-edge gradients in one backward).

- Senders: ``input`` is the stream entering block 0 (embeddings, with any scale or positions the
  model adds); head ``h`` of layer ``L`` is its slice of the attention output projection's input
  times that projection's weight rows (bias excluded: it is the same on every run); ``m{L}`` is
  the MLP's output (``mlp_out``; a mixture of experts' whole output).
- Receivers: a head's query/key/value input is the block input as that head's projection reads
  it: ``proj(norm(x_r))`` restricted to the head's columns, with ``x_r`` the block input minus the
  patched senders' differences; other heads read the unpatched stream. The MLP's input is
  replaced where the MLP reads it (the norm before it in sequential blocks; in parallel blocks the
  block input, through the shared norm where there is one). The logits read the last block's
  output at the final position.
- Grouped-query attention (Llama 3, Mistral, Qwen2, ...): a receiver is one *query* head's key or
  value input, so during these runs the key/value projections' outputs are repeated per query
  head (the attention module's ``num_key_value_groups`` set to 1, restored afterwards): the same
  numbers on an unpatched run, and a patched key reaches only its query head.

Refused by name (:func:`check_supported`): encoders, blocks whose post-attention norm rescales
the heads' summed writes (Gemma 2/3, OLMo 2/3: a head's write to the stream is not additive),
post-LN OPT, grouped- or multi-query attention with a fused query/key/value projection (Falcon
7B/40B, Phi-3 medium), and model types whose attention layout is unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..interventions.checks import _check_lm
from ..interventions.path_patching import QKV, qkv_layout
from ..model import Model, _get
from ._graph import _Tap, build_graph

_SANDWICH = ("gemma2", "gemma3_text", "olmo2", "olmo3")


class _Stop(Exception):
    pass


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


def _mlp_input(model: Model, parallel: bool) -> tuple[str, str | None]:
    """``(module, norm)``: the module whose first input the MLP receiver replaces, and the norm
    applied to the receiver's residual to make that input (``None``: the input is the stream)."""
    arch = model.arch
    mt = getattr(model.hf.config, "model_type", "")
    if not parallel:
        r = arch.reads.get("resid_mid")
        if r is None or r.io != "input" or not r.module or r.item is not None:
            raise ValueError(f"no module reads resid_mid as its input in {model.name} ({model.family})")
        return r.module, None
    cfg = model.hf.config
    if mt == "gpt_neox":
        return "post_attention_layernorm", None
    if mt == "gptj":
        return "mlp", "ln_1"
    if mt == "phi":
        return "mlp", "input_layernorm"
    if mt == "falcon":
        if cfg.new_decoder_architecture and getattr(cfg, "num_ln_in_parallel_attn", 2) == 2:
            return "ln_mlp", None
        return "mlp", "input_layernorm"
    raise ValueError(f"where the MLP of a parallel {mt!r} block reads its input is not known")


def check_supported(model: Model, what: str) -> QKV:
    """Refuse, before any forward, a model whose edge graph mi-widgets cannot run exactly; the
    error names the family and why. Returns the attention layout."""
    _check_lm(model)
    mt = getattr(model.hf.config, "model_type", "")
    who = f"{model.name} ({model.family}, model type {mt!r})"
    if mt in _SANDWICH:
        raise ValueError(
            f"{what} does not support {who}: a norm after the attention output projection rescales "
            "the sum of the heads' writes, so one head's contribution to the residual stream is not "
            "additive and head -> receiver edges are undefined; use path_patching or "
            "activation_patching(site='head_out')"
        )
    if mt == "opt" and not getattr(model.hf.config, "do_layer_norm_before", True):
        raise ValueError(
            f"{what} does not support {who}: post-LN blocks normalise the stream after each sublayer, "
            "so it is not a sum of sender outputs; use path_patching or activation_patching"
        )
    lay = qkv_layout(model, what)
    if lay.n_kv < lay.n_heads and lay.layout != "separate":
        raise ValueError(
            f"{what} does not support {who}: its {'multi' if lay.n_kv == 1 else 'grouped'}-query attention "
            "computes queries, keys and values in one fused projection, so a query head's own key/value "
            "input cannot be patched without changing its group's; use path_patching (keys/values per group)"
        )
    if model.arch.o_proj is None or "mlp_out" not in model.arch.reads or lay.norm is None:
        raise ValueError(f"{what} does not support {who}: its component map lacks head_out or mlp_out")
    if lay.n_kv < lay.n_heads:
        attn = _get(_get(model.hf, model.arch.layers)[0], lay.attn)
        if not hasattr(attn, "num_key_value_groups"):
            raise ValueError(
                f"{what} does not support {who}: its attention module has no num_key_value_groups to ungroup "
                "keys/values per query head"
            )
    _mlp_input(model, "resid_mid" not in model.arch.reads)
    return lay


class HookNet:
    """Forwards of the edge graph on a Hugging Face model (see the module docstring)."""

    def __init__(self, model: Model, what: str = "circuits"):
        self.lay = check_supported(model, what)
        self.model = model
        self.hf = model.hf
        arch = model.arch
        self.blocks = _get(self.hf, arch.layers)
        self.L, self.H, self.d, self.dh = model.n_layers, model.n_heads, model.d_model, model.d_head
        self.parallel = "resid_mid" not in arch.reads
        self.graph = build_graph(self.L, self.H, parallel=self.parallel)
        self.mlp_in, self.mlp_norm = _mlp_input(model, self.parallel)
        self.WO = []
        for b in self.blocks:
            w = _get(b, arch.o_proj).weight.detach()
            w = w if arch.o_proj_kind == "conv1d" else w.T  # [H*dh, d]
            self.WO.append(w.reshape(self.H, self.dh, -1))
        lay = self.lay
        self.ungroup = lay.n_kv < lay.n_heads
        # projection module -> [(kind, head)] whose q/k/v it computes; output columns per receiver
        self.recs: dict[str, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
        self.expand: dict[str, torch.Tensor | None] = {}
        for i, kind in enumerate("qkv"):
            mod = lay.module[kind]
            lst = self.recs.setdefault(mod, [])
            grouped = self.ungroup and kind != "q"
            if grouped:  # this module's output, repeated per query head
                self.expand[mod] = torch.cat([lay.cols(kind, h) for h in range(self.H)])
            else:
                self.expand.setdefault(mod, None)
            for h in range(self.H):
                src = lay.cols(kind, h)
                dst = torch.arange(h * self.dh, (h + 1) * self.dh) if grouped else src
                lst.append((3 * h + i, dst, src))
        self._empty: dict = {}

    @property
    def device(self) -> torch.device:
        return self.model.device

    def s0(self, layer: int) -> int:
        return 1 + layer * (self.H + 1)

    def r0(self, layer: int) -> int:
        return layer * (3 * self.H + 1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The stream entering block 0 ``[B, T, d]`` for token ids ``ids``."""
        got: dict = {}

        def pre(_m: Any, args: tuple, kwargs: dict) -> None:
            got["x"] = _hidden(args, kwargs).detach().clone()
            raise _Stop

        hk = self.blocks[0].register_forward_pre_hook(pre, with_kwargs=True)
        try:
            with torch.no_grad():
                self.hf(ids, attention_mask=torch.ones_like(ids), use_cache=False)
        except _Stop:
            pass
        finally:
            hk.remove()
        return got["x"]

    # ------------------------------------------------------------------------------------------
    def _forward(self, embeds: torch.Tensor, hooks: list[tuple[torch.nn.Module, str, Callable]]) -> torch.Tensor:
        """Final-position logits of a run whose block-0 input is ``embeds``, with ``hooks``
        ``(module, "pre"|"pre_kw"|"post", fn)`` in place (removed afterwards)."""
        B, T, _ = embeds.shape
        handles = []
        attn_groups = []
        try:
            if self.ungroup:
                for b in self.blocks:
                    a = _get(b, self.lay.attn)
                    attn_groups.append((a, a.num_key_value_groups))
                    a.num_key_value_groups = 1
            for mod, how, fn in hooks:
                if how == "post":
                    handles.append(mod.register_forward_hook(fn))
                else:
                    handles.append(mod.register_forward_pre_hook(fn, with_kwargs=how == "pre_kw"))
            ids = torch.zeros(B, T, dtype=torch.long, device=embeds.device)
            out = self.hf(ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
            return out.logits[:, -1]
        finally:
            for h in handles:
                h.remove()
            for a, n in attn_groups:
                a.num_key_value_groups = n

    def _norm(self, block: torch.nn.Module, path: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
        if path is None:
            return lambda x: x
        return _get(block, path).forward  # the module's forward without its hooks

    def _hooks(self, embeds: torch.Tensor, sender: Callable, head_in: Callable, mlp_in: Callable,
               logits_in: Callable) -> list:
        """The hooks shared by both runs; ``sender(s0, values)`` sees each sender's outputs,
        ``head_in(layer, mod, block, resid, out)`` / ``mlp_in(layer, block, resid, x)`` /
        ``logits_in(h)`` return what the receivers read."""
        hooks: list = []
        resid: dict[int, torch.Tensor] = {}
        H, dh = self.H, self.dh

        for layer, b in enumerate(self.blocks):
            def pre_block(_m, args, kwargs, layer=layer):
                if layer == 0:
                    args, kwargs = _with_hidden(args, kwargs, embeds)
                    sender(0, embeds[None])
                resid[layer] = _hidden(args, kwargs)
                return args, kwargs

            hooks.append((b, "pre_kw", pre_block))

            def pre_o(_m, args, layer=layer):
                z = args[0]
                Bz, T = z.shape[:2]
                w = self.WO[layer].to(z.dtype)
                sender(self.s0(layer), torch.einsum("bthe,hed->hbtd", z.reshape(Bz, T, H, dh), w))

            hooks.append((_get(b, self.model.arch.o_proj), "pre", pre_o))
            for mod in self.recs:
                def post_proj(m, _a, out, layer=layer, mod=mod, b=b):
                    ex = self.expand[mod]
                    if ex is not None:
                        out = out[..., ex.to(out.device)]
                    return head_in(layer, mod, m, b, resid[layer], out)

                hooks.append((_get(b, mod), "post", post_proj))

            def pre_mlp(_m, args, layer=layer, b=b):
                return (mlp_in(layer, b, resid[layer], args[0]), *args[1:])

            hooks.append((_get(b, self.mlp_in), "pre", pre_mlp))

            def post_mlp(_m, _a, out, layer=layer):
                sender(self.s0(layer) + H, out[None])

            hooks.append((_get(b, self.model.arch.reads["mlp_out"].module), "post", post_mlp))

        def post_last(_m, _a, out):
            if isinstance(out, tuple):
                return (logits_in(out[0]), *out[1:])
            return logits_in(out)

        hooks.append((self.blocks[-1], "post", post_last))
        return hooks

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        embeds: torch.Tensor,
        *,
        corrupt: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        record: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`._graph.Net.run`: final-position logits ``[B, V]`` with edge ``(s, r)`` of row
        ``b`` corrupted in proportion ``mask[b, s, r]``; with ``record`` the sender outputs
        ``[B, S, T, d]``."""
        B, T, d = embeds.shape
        S, H = self.graph.n_senders, self.H
        keep = record or mask is not None
        outs = embeds.new_empty(S, B, T, d).transpose(0, 1) if keep else None
        if mask is not None:
            assert corrupt is not None and mask.shape == (B, S, self.graph.n_receivers)
            mask = mask.to(embeds.dtype)

        def sender(s: int, vals: torch.Tensor) -> None:
            if outs is not None:
                outs[:, s : s + vals.shape[0]] = vals.transpose(0, 1)

        def shifted(x: torch.Tensor, n: int, rs: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
            """Rows with a patched edge from senders ``< n`` into receivers ``rs``, and their
            inputs ``[u, len(rs), T, d]``: ``x`` minus the patched senders' differences."""
            if mask is None:
                return None
            sub = mask[:, :n, rs]
            rows = sub.flatten(1).any(1).nonzero()[:, 0]
            if rows.numel() == 0:
                return None
            diff = outs[rows, :n] - corrupt[rows, :n]  # type: ignore[index]
            u = rows.numel()
            corr = torch.bmm(sub[rows].transpose(1, 2), diff.reshape(u, n, T * d)).view(u, len(rs), T, d)
            return rows, x[rows, None] - corr

        def head_in(layer, mod, m, b, x, out):
            lst = self.recs[mod]
            r0 = self.r0(layer)
            got = shifted(x, self.s0(layer), [r0 + j for j, _, _ in lst])
            if got is None:
                return out
            rows, xr = got
            y = m.forward(self._norm(b, self.lay.norm)(xr))  # [u, R, T, out]
            part = out[rows].clone()
            for i, (_, dst, src) in enumerate(lst):
                part[..., dst.to(out.device)] = y[:, i][..., src.to(out.device)].to(out.dtype)
            out = out.clone()
            out[rows] = part
            return out

        def mlp_in(layer, b, x_block, x):
            n = self.s0(layer) if self.parallel else self.s0(layer) + H
            base = x if self.mlp_norm is None else x_block
            got = shifted(base, n, [self.r0(layer) + 3 * H])
            if got is None:
                return x
            rows, xr = got
            x = x.clone()
            x[rows] = self._norm(b, self.mlp_norm)(xr[:, 0]).to(x.dtype)
            return x

        def logits_in(h):
            if mask is None or not bool(mask[:, :, -1].any()):
                return h
            diff = outs[:, :, -1] - corrupt[:, :, -1]  # type: ignore[index]
            h = h.clone()
            h[:, -1] -= torch.einsum("bs,bsd->bd", mask[:, :, -1], diff).to(h.dtype)
            return h

        logits = self._forward(embeds, self._hooks(embeds, sender, head_in, mlp_in, logits_in))
        return logits, (outs if record else None)

    def run_grad(
        self,
        embeds: torch.Tensor,
        delta: torch.Tensor,
        scores: torch.Tensor,
        *,
        subtract_outputs: bool,
    ) -> torch.Tensor:
        """As :meth:`._graph.Net.run_grad`: logits in autograd whose backward adds
        ``delta[s] · d metric / d input_r`` to ``scores[s, r]``; the model's parameters get no
        gradient (they are frozen for the forward and restored)."""
        H = self.H
        S, R = self.graph.n_senders, self.graph.n_receivers
        flat = delta.view(S, -1)

        def add(n: int, rs: torch.Tensor) -> Callable[[torch.Tensor], None]:
            def cb(g: torch.Tensor) -> None:
                g = g.reshape(len(rs), -1)
                scores[:n].index_add_(1, rs.to(scores.device), (flat[:n] @ g.T.to(flat.dtype)).to(scores.device, scores.dtype))

            return cb

        def sender(s: int, vals: torch.Tensor) -> None:
            if subtract_outputs:
                delta[s : s + vals.shape[0]] -= vals.detach()

        def head_in(layer, mod, m, b, x, out):
            lst = self.recs[mod]
            rs = torch.tensor([self.r0(layer) + j for j, _, _ in lst])
            xr = _Tap.apply(x.unsqueeze(0).expand(len(lst), *x.shape), add(self.s0(layer), rs))
            y = m.forward(self._norm(b, self.lay.norm)(xr))  # [R, B, T, out]
            out = out.clone()
            for i, (_, dst, src) in enumerate(lst):
                out[..., dst.to(out.device)] = y[i][..., src.to(out.device)]
            return out

        def mlp_in(layer, b, x_block, x):
            n = self.s0(layer) if self.parallel else self.s0(layer) + H
            cb = add(n, torch.tensor([self.r0(layer) + 3 * H]))
            if self.mlp_norm is None:
                return _Tap.apply(x, cb)
            return self._norm(b, self.mlp_norm)(_Tap.apply(x_block, cb))

        def cb_logits(g: torch.Tensor) -> None:
            last = delta[:, :, -1].reshape(S, -1)  # a copy: taken after the forward's subtractions
            scores[:, R - 1] += (last @ g.reshape(-1).to(last.dtype)).to(scores.device, scores.dtype)

        def logits_in(h):
            return torch.cat([h[:, :-1], _Tap.apply(h[:, -1:], cb_logits)], 1)

        x = embeds.detach().requires_grad_(True)
        params = [p for p in self.hf.parameters() if p.requires_grad]
        try:
            for p in params:
                p.requires_grad_(False)
            return self._forward(x, self._hooks(x, sender, head_in, mlp_in, logits_in))
        finally:
            for p in params:
                p.requires_grad_(True)
