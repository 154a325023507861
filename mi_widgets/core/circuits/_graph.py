"""The edge graph of a model and the functional GPT-2 forward pass that runs on it (other
families run on the Hugging Face modules with hooks: :mod:`._hooknet`).

Senders (index ``s``): ``input`` (0), then per layer ``L`` its heads ``a{L}.h{H}`` and its MLP
``m{L}``. Receiver inputs (index ``r``): per layer each head's ``q``, ``k``, ``v`` input, then the
MLP's input; last ``logits``. A receiver in layer ``L`` reads the residual stream, which is the
sum of every earlier sender's output plus constant biases (the attention output bias ``b_O`` is
not a sender: it is the same on every run, so no edge carries it). Edge ``s -> r`` exists when
``s < n_senders_for[r]``.

Why a functional forward instead of the interventions engine: an edge changes one receiver
input of one head (its query, say) and leaves the residual stream that every other head reads
alone, so each of the ``3 H + 1`` receiver inputs of a layer needs its own residual input. The
engine patches whole sites; here a block is recomputed from its weights (read from the Hugging
Face modules, never modified, no hooks), with the layer's input duplicated per receiver only
where an edge is patched. ``tests/circuits/test_graph.py`` checks it against the Hugging Face
forward.

Attribution convention (as in EAP-IG): an edge's gradient is taken at the receiver's residual
input *before* its LayerNorm, so the sender's contribution passes through the receiver's
LayerNorm; the per-receiver LayerNorm backward is done by hand in :class:`_SplitQKV` so that one
backward pass yields every head's q/k/v input gradient separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

KINDS = ("q", "k", "v")


def count_edges(n_layers: int, n_heads: int, parallel: bool = False) -> int:
    """Edges of the graph: ``(3H+1)(H+1)L(L-1)/2 + 3HL + 2L(H+1) + 1`` (32,491 for L = H = 12);
    ``LH`` fewer with ``parallel`` attention and MLP (no edge from a layer's heads to its MLP)."""
    L, H = n_layers, n_heads
    n = (3 * H + 1) * (H + 1) * L * (L - 1) // 2 + 3 * H * L + 2 * L * (H + 1) + 1
    return n - L * H if parallel else n


@dataclass
class Graph:
    n_layers: int
    n_heads: int
    senders: list[str]
    receivers: list[tuple[str, str]]  # (node, kind)
    n_senders_for: torch.Tensor  # [R] long
    edge_s: torch.Tensor  # [E] sender index of each edge
    edge_r: torch.Tensor  # [E] receiver index
    parallel: bool = False  # a layer's MLP reads the block input, as its attention does

    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def n_receivers(self) -> int:
        return len(self.receivers)

    @property
    def n_edges(self) -> int:
        return int(self.edge_s.numel())

    def sender_index(self, node: str) -> int:
        return self.senders.index(node)

    def receiver_index(self, node: str, kind: str = "") -> int:
        return self.receivers.index((node, kind))

    def edge_index(self, sender: str, receiver: str, kind: str = "") -> int:
        s, r = self.sender_index(sender), self.receiver_index(receiver, kind)
        hit = ((self.edge_s == s) & (self.edge_r == r)).nonzero()
        if hit.numel() == 0:
            why = "a sender must come before its receiver"
            if self.parallel:
                why += " (attention and MLP of a layer read the same block input here: no edge a{L}.h -> m{L})"
            raise ValueError(f"no edge {sender} -> {receiver}<{kind}>: {why}")
        return int(hit[0, 0])

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """``[E]`` edge values as a ``[S, R]`` matrix (0 where there is no edge)."""
        out = torch.zeros(self.n_senders, self.n_receivers, dtype=values.dtype)
        out[self.edge_s, self.edge_r] = values
        return out


def build_graph(n_layers: int, n_heads: int, parallel: bool = False) -> Graph:
    """The edge graph; with ``parallel`` (GPT-J, NeoX, Phi-1/2, Falcon: attention and MLP read
    the same block input) a layer's MLP hears only earlier layers, not its own heads."""
    L, H = n_layers, n_heads
    senders = ["input"]
    receivers: list[tuple[str, str]] = []
    nsend: list[int] = []
    for layer in range(L):
        s0 = len(senders)
        for h in range(H):
            for k in KINDS:
                receivers.append((f"a{layer}.h{h}", k))
                nsend.append(s0)
        senders += [f"a{layer}.h{h}" for h in range(H)]
        receivers.append((f"m{layer}", ""))
        nsend.append(s0 if parallel else len(senders))
        senders.append(f"m{layer}")
    receivers.append(("logits", ""))
    nsend.append(len(senders))
    ns = torch.tensor(nsend)
    mask = torch.arange(len(senders))[:, None] < ns[None, :]
    es, er = mask.nonzero(as_tuple=True)
    g = Graph(L, H, senders, receivers, ns, es, er, parallel)
    assert g.n_edges == count_edges(L, H, parallel)
    return g


# --------------------------------------------------------------------------------------------
# Autograd pieces: per-receiver gradients in one backward pass
# --------------------------------------------------------------------------------------------


class _SplitQKV(torch.autograd.Function):
    """``LN(x) @ W + b`` (GPT-2's fused q/k/v projection) whose backward hands ``cb`` the
    gradient w.r.t. ``x`` *separately* for each head's q, k and v input, ``[H*3, B, T, d]``
    (order head-major, then q, k, v), as if each read its own copy of ``x``; it returns their sum."""

    @staticmethod
    def forward(ctx, x, w, b, eps, W, bias, n_heads, cb):  # type: ignore[override]
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        rstd = torch.rsqrt((xc * xc).mean(-1, keepdim=True) + eps)
        n = xc * rstd
        ctx.save_for_backward(n, rstd, W * w[:, None])
        ctx.n_heads, ctx.cb = n_heads, cb
        return (n * w + b) @ W + bias

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        # LayerNorm backward per receiver r, with G_r = (dout_r @ W_r^T) * w:
        #   dx_r = rstd * (G_r - mean_d(G_r) - n * mean_d(G_r * n))
        # both means come from small contractions (no extra pass over the [3H, B, T, d] tensor)
        n, rstd, Ww = ctx.saved_tensors
        B, T, _ = dout.shape
        d, H = Ww.shape[0], ctx.n_heads
        dh = d // H
        do = dout.view(B, T, 3, H, dh)
        G = torch.einsum("btkhe,dkhe->hkbtd", do, Ww.view(d, 3, H, dh)).reshape(3 * H, B, T, d)
        a = torch.einsum("btkhe,khe->hkbt", do, Ww.sum(0).view(3, H, dh)).reshape(3 * H, B, T, 1)
        nb = (do * (n @ Ww).view(B, T, 3, H, dh)).sum(-1).permute(3, 2, 0, 1).reshape(3 * H, B, T, 1)
        G.sub_(a / d)
        G.addcmul_(n, nb, value=-1.0 / d)
        G.mul_(rstd)
        ctx.cb(G)
        return G.sum(0), None, None, None, None, None, None, None


class _Tap(torch.autograd.Function):
    """Identity whose backward hands ``cb`` the gradient arriving through this branch."""

    @staticmethod
    def forward(ctx, x, cb):  # type: ignore[override]
        ctx.cb = cb
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        ctx.cb(g)
        return g, None


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class Net:
    """A GPT-2 model's weights (detached views of the Hugging Face parameters) and forwards on
    its edge graph. Only final-position logits are computed (every metric reads them)."""

    def __init__(self, model: Any):
        hf = model.hf
        cfg = hf.config
        tr = hf.transformer
        self.L, self.H = int(cfg.n_layer), int(cfg.n_head)
        self.d = int(cfg.n_embd)
        self.dh = self.d // self.H
        self.graph = build_graph(self.L, self.H)
        self._future: dict = {}
        self.wte = tr.wte.weight.detach()
        self.wpe = tr.wpe.weight.detach()
        self.blocks = []
        for i, b in enumerate(tr.h):
            scale = (1.0 / self.dh**0.5) if getattr(cfg, "scale_attn_weights", True) else 1.0
            if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
                scale /= float(i + 1)
            self.blocks.append(
                {
                    "ln1": (b.ln_1.weight.detach(), b.ln_1.bias.detach(), float(b.ln_1.eps)),
                    "W": b.attn.c_attn.weight.detach(),
                    "b": b.attn.c_attn.bias.detach(),
                    "WO": b.attn.c_proj.weight.detach().view(self.H, self.dh, self.d),
                    "WO_flat": b.attn.c_proj.weight.detach(),
                    "bO": b.attn.c_proj.bias.detach(),
                    "ln2": (b.ln_2.weight.detach(), b.ln_2.bias.detach(), float(b.ln_2.eps)),
                    "fc": (b.mlp.c_fc.weight.detach(), b.mlp.c_fc.bias.detach()),
                    "proj": (b.mlp.c_proj.weight.detach(), b.mlp.c_proj.bias.detach()),
                    "act": b.mlp.act,
                    "scale": scale,
                }
            )
        self.lnf = (tr.ln_f.weight.detach(), tr.ln_f.bias.detach(), float(tr.ln_f.eps))
        self.unembed = hf.lm_head.weight.detach()
        ub = getattr(hf.lm_head, "bias", None)
        self.unembed_b = ub.detach() if ub is not None else None

    # indices ---------------------------------------------------------------------------------
    def s0(self, layer: int) -> int:
        """First sender index of ``layer`` (= senders a head of ``layer`` may hear)."""
        return 1 + layer * (self.H + 1)

    def r0(self, layer: int) -> int:
        return layer * (3 * self.H + 1)

    # pieces ------------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        return self.wte[ids] + self.wpe[:T][None]

    def _attend(self, q, k, v, scale):
        """q, k, v ``[B, H, T, dh]`` -> z ``[B, H, T, dh]`` (causal softmax attention)."""
        T = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) * scale
        key = (T, q.device)
        if key not in self._future:
            self._future[key] = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(self._future[key], torch.finfo(s.dtype).min)
        return torch.softmax(s, dim=-1) @ v

    def _mlp(self, blk, x):
        w, b, eps = blk["ln2"]
        h = F.layer_norm(x, (self.d,), w, b, eps) @ blk["fc"][0] + blk["fc"][1]
        return blk["act"](h) @ blk["proj"][0] + blk["proj"][1]

    def _logits(self, x_last):
        w, b, eps = self.lnf
        out = F.layer_norm(x_last, (self.d,), w, b, eps) @ self.unembed.T
        return out + self.unembed_b if self.unembed_b is not None else out

    # forwards ----------------------------------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        embeds: torch.Tensor,
        *,
        corrupt: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        record: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final-position logits ``[B, V]`` of the run on ``embeds`` ``[B, T, d]`` where edge
        ``(s, r)`` of row ``b`` is corrupted in proportion ``mask[b, s, r]`` (1 = the receiver
        hears the sender's ``corrupt[b, s]`` output instead of this run's output). With
        ``record`` also the sender outputs ``[B, S, T, d]`` of this run."""
        B, T, d = embeds.shape
        H, dh = self.H, self.dh
        S = self.graph.n_senders
        keep = record or mask is not None
        # [B, S, T, d] view of sender-major storage: .transpose(0, 1) is contiguous
        outs = embeds.new_empty(S, B, T, d).transpose(0, 1) if keep else None
        if mask is not None:
            assert corrupt is not None and mask.shape == (B, S, self.graph.n_receivers)
            mask = mask.to(embeds.dtype)
        resid = embeds
        if outs is not None:
            outs[:, 0] = embeds
        for layer, blk in enumerate(self.blocks):
            s0, r0 = self.s0(layer), self.r0(layer)
            w, b, eps = blk["ln1"]
            ln = F.layer_norm(resid, (d,), w, b, eps)
            qkv = (ln @ blk["W"] + blk["b"]).view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
            sub = None if mask is None else mask[:, :s0, r0 : r0 + 3 * H]
            if sub is not None:
                # only rows with a patched edge into this layer get per-receiver inputs
                rows = sub.flatten(1).any(1).nonzero()[:, 0]
                if rows.numel():
                    u, R3 = rows.numel(), 3 * H
                    if u == B:
                        diff = outs[:, :s0] - corrupt[:, :s0]  # type: ignore[index]
                    else:
                        diff = outs[rows, :s0] - corrupt[rows, :s0]  # type: ignore[index]
                    corr = torch.bmm(sub[rows].transpose(1, 2), diff.reshape(u, s0, T * d))
                    rin = resid[rows, None] - corr.view(u, R3, T, d)
                    ln_r = F.layer_norm(rin, (d,), w, b, eps)
                    Wr = blk["W"].view(d, 3, H, dh).permute(0, 2, 1, 3).reshape(d, R3, dh)
                    br = blk["b"].view(3, H, dh).permute(1, 0, 2).reshape(R3, 1, dh)
                    part = torch.einsum("urtd,dre->urte", ln_r, Wr) + br
                    qkv = qkv.clone()
                    qkv[:, rows] = part.view(u, H, 3, T, dh).permute(2, 0, 1, 3, 4)
            z = self._attend(qkv[0], qkv[1], qkv[2], blk["scale"])
            head_out = torch.einsum("bhte,hed->bhtd", z, blk["WO"])
            if outs is not None:
                outs[:, s0 : s0 + H] = head_out
            mid = resid + head_out.sum(1) + blk["bO"]
            sm, rm = s0 + H, r0 + 3 * H
            min_ = mid
            if mask is not None:
                rows = mask[:, :sm, rm].any(1).nonzero()[:, 0]
                if rows.numel():
                    min_ = mid.clone()
                    diff = outs[rows, :sm] - corrupt[rows, :sm]  # type: ignore[index]
                    min_[rows] -= torch.einsum("ns,nstd->ntd", mask[rows, :sm, rm], diff)
            mlp_out = self._mlp(blk, min_)
            if outs is not None:
                outs[:, sm] = mlp_out
            resid = mid + mlp_out
        last = resid[:, -1]
        if mask is not None and bool(mask[:, :, -1].any()):
            diff = outs[:, :, -1] - corrupt[:, :, -1]  # type: ignore[index]
            last = last - torch.einsum("bs,bsd->bd", mask[:, :, -1], diff)
        return self._logits(last), (outs if record else None)

    def run_grad(
        self,
        embeds: torch.Tensor,
        delta: torch.Tensor,
        scores: torch.Tensor,
        *,
        subtract_outputs: bool,
    ) -> torch.Tensor:
        """Final-position logits, in autograd, of a run on ``embeds``; the backward of anything
        computed from them adds ``delta[s] · dmetric/d(input of r)`` (summed over rows and
        positions) to ``scores[s, r]`` for every edge. ``delta`` ``[S, B, T, d]`` holds the
        corrupt run's sender outputs; with ``subtract_outputs`` this run's outputs are
        subtracted in place as they are computed (so it becomes corrupt - this run)."""
        B, T, d = embeds.shape
        H = self.H
        flat = delta.view(delta.shape[0], -1)

        def add(s_end: int, r_start: int, r_end: int):
            def cb(g: torch.Tensor) -> None:
                g = g.reshape(r_end - r_start, -1)
                scores[:s_end, r_start:r_end] += (flat[:s_end] @ g.T).to(scores.device, scores.dtype)

            return cb

        if subtract_outputs:
            delta[0] -= embeds.detach()
        x = embeds.detach().requires_grad_(True)
        resid = x
        for layer, blk in enumerate(self.blocks):
            s0, r0 = self.s0(layer), self.r0(layer)
            w, b, eps = blk["ln1"]
            qkv = _SplitQKV.apply(
                resid, w, b, eps, blk["W"], blk["b"], H, add(s0, r0, r0 + 3 * H)
            )
            q, k, v = qkv.view(B, T, 3, H, self.dh).permute(2, 0, 3, 1, 4)
            z = self._attend(q, k, v, blk["scale"])
            zf = z.transpose(1, 2).reshape(B, T, d)
            if subtract_outputs:
                with torch.no_grad():
                    delta[s0 : s0 + H] -= torch.einsum("bhte,hed->hbtd", z, blk["WO"])
            mid = resid + zf @ blk["WO_flat"] + blk["bO"]
            sm, rm = s0 + H, r0 + 3 * H
            mlp_out = self._mlp(blk, _Tap.apply(mid, add(sm, rm, rm + 1)))
            if subtract_outputs:
                delta[sm] -= mlp_out.detach()
            resid = mid + mlp_out
        S, R = self.graph.n_senders, self.graph.n_receivers
        last_flat = delta[:, :, -1].reshape(S, -1)

        def cb_logits(g: torch.Tensor) -> None:
            scores[:, R - 1] += (last_flat @ g.reshape(-1)).to(scores.device, scores.dtype)

        return self._logits(_Tap.apply(resid[:, -1], cb_logits))
