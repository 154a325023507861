"""Patchscopes: decode a hidden state by patching it into an inspection prompt and generating.

:func:`patchscope` reads the residual stream of a *source* prompt at ``(layer, position)``,
writes it over the residual stream of a *target* (inspection) prompt at ``(target layer,
target position)``, and lets the model continue the inspection prompt greedily for a few
tokens. What the model writes is its own verbalisation of the patched state (Ghandeharioun et
al. 2024, "Patchscopes").

Layers follow the residual-stream convention of the rest of mi-widgets: layer ``l`` is
``resid_pre[l]``, the input of block ``l``; layer ``n_layers`` is the last block's output. A
source layer ``l`` is written at target layer ``l`` (``target_layers="same"``, a source-layer
table) or at every target layer (``"all"``, a source × target table).

The patch is applied once, at the first forward of generation (the prompt pass); later tokens
see it through the keys and values cached at the patched position. Every cell of the table is
one row of a batched ``model.nn.generate`` (nnsight), greedy, so results are deterministic.

Inspection prompts: the default is the identity prompt of the paper, ``"cat → cat; 1135 → 1135;
hello → hello; ? →"`` with the state patched over ``?``, for models that can continue such a
pattern. The embedded ``zoo:tiny`` never saw arrows or copy lists, so an identity prompt cannot
work there (measured: its two-hop "copy the city from the step" prompt with a city token's
embedding patched over the step's city decodes that city for 5-10% of the 20 cities, chance
level). Its default is a fact prompt about a made-up place whose city the model does not know,
``"The Silver Mill is in"``, with the state patched over the final ``" in"``: whatever city the
patched state points to is what the model says next (see :func:`inspection_prompt`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from .._views import DisplaysAsView
from ..model import Model

#: The identity inspection prompt of the Patchscopes paper (placeholder ``?``).
IDENTITY_PROMPT = "cat → cat; 1135 → 1135; hello → hello; ? →"
#: zoo:tiny's inspection prompt: a made-up place (the corpus gives such places random cities),
#: patched at the final position.
TINY_PROMPT = "The Silver Mill is in"
# rows per batched generate
_MAX_ROWS = 64


def inspection_prompt(model: Model) -> tuple[str, int]:
    """The default inspection prompt for ``model`` and the position that gets the patched
    state: the identity prompt and its placeholder ``?``, or for ``zoo:tiny`` the made-up-place
    fact prompt and its final position."""
    prompt = TINY_PROMPT if model.name == "zoo:tiny" else IDENTITY_PROMPT
    toks = model.to_str_tokens(prompt)
    marks = [i for i, t in enumerate(toks) if t.strip() == "?"] if prompt == IDENTITY_PROMPT else []
    pos = marks[-1] if marks else len(toks) - 1
    return prompt, pos


@dataclass(repr=False)
class PatchscopeResult(DisplaysAsView):
    """Decoded continuations of the inspection prompt, one per (source layer, target layer).

    ``texts[i][j]``: the continuation (``n_tokens`` greedy tokens, cut at end-of-text) with
    source layer ``source_layers[i]`` patched at ``target_layers[j]``; with
    ``target_layers="same"`` ``texts[i]`` has one entry (target layer = source layer).
    ``token_ids`` ``[n_source, n_target, n_tokens]``; ``first_prob``: the probability of each
    cell's first generated token. ``baseline``: the inspection prompt's own continuation
    without a patch.
    """

    model_name: str
    source_text: str
    source_tokens: list[str]
    source_position: int
    target_prompt: str
    target_tokens: list[str]
    target_position: int
    source_layers: list[int]
    target_layers: list[int] | None
    texts: list[list[str]]
    token_ids: torch.Tensor
    first_prob: torch.Tensor
    baseline: str
    n_tokens: int
    model: Model | None = field(default=None, compare=False)

    @property
    def same_layer(self) -> bool:
        return self.target_layers is None

    def target_layers_of(self, i: int) -> list[int]:
        return [self.source_layers[i]] if self.target_layers is None else self.target_layers

    def first_tokens(self) -> list[list[str]]:
        """The first generated token of every cell."""
        return [[t[0] if t else "" for t in row] for row in self.token_strings()]

    def token_strings(self) -> list[list[list[str]]]:
        tok = self.model.tokenizer if self.model is not None else None
        out = []
        for i, row in enumerate(self.texts):
            r = []
            for j, _ in enumerate(row):
                ids = [int(x) for x in self.token_ids[i, j].tolist() if x >= 0]
                r.append([tok.decode([x]) for x in ids] if tok is not None else [])
            out.append(r)
        return out

    def __repr__(self) -> str:
        lines = [
            f"PatchscopeResult({self.model_name}, source {self.source_tokens[self.source_position]!r} "
            f"@ {self.source_position}, target {self.target_tokens[self.target_position]!r} @ "
            f"{self.target_position}, {self.n_tokens} tokens)"
        ]
        for i, sl in enumerate(self.source_layers):
            cells = " | ".join(
                f"{tl}: {t!r}" for tl, t in zip(self.target_layers_of(i), self.texts[i])
            )
            lines.append(f"  source layer {sl}: {cells}")
        return "\n".join(lines)

    def to_pandas(self) -> Any:
        """Tidy table: ``source_layer``, ``target_layer``, ``text``, ``first_token``, ``first_prob``."""
        import pandas as pd

        first = self.first_tokens()
        rows = []
        for i, sl in enumerate(self.source_layers):
            for j, tl in enumerate(self.target_layers_of(i)):
                rows.append(
                    {
                        "source_layer": sl,
                        "target_layer": tl,
                        "text": self.texts[i][j],
                        "first_token": first[i][j],
                        "first_prob": float(self.first_prob[i, j]),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, ax: Any = None) -> Any:
        """Matplotlib table: source layers down, target layers across, each cell the decoded
        text, shaded by the first token's probability."""
        import matplotlib.pyplot as plt

        n_s = len(self.source_layers)
        n_t = 1 if self.same_layer else len(self.target_layers or [])
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * n_t + 1.5), 0.5 * n_s + 1.2))
        else:
            fig = ax.figure
        ax.imshow(self.first_prob.numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
        for i in range(n_s):
            for j in range(n_t):
                ax.text(j, i, self.texts[i][j].replace("\n", "\\n"), ha="center", va="center", fontsize=8)
        ax.set_yticks(range(n_s), [str(x) for x in self.source_layers])
        ax.set_ylabel("source layer (resid_pre)")
        if self.same_layer:
            ax.set_xticks([0], ["target layer = source layer"])
        else:
            ax.set_xticks(range(n_t), [str(x) for x in self.target_layers or []])
            ax.set_xlabel("target layer (resid_pre)")
        src = self.source_tokens[self.source_position].replace("\n", "\\n")
        ax.set_title(f"{self.model_name} · patchscope of {src!r} @ {self.source_position}", fontsize=10)
        fig.tight_layout()
        return fig


def _check_layers(model: Model, layers: Any, what: str) -> list[int]:
    top = model.n_layers
    if isinstance(layers, str) and layers == "all":
        return list(range(top + 1))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if not isinstance(layers, (list, tuple, range)) or len(layers) == 0:
        raise ValueError(f"{what} must be 'all', an int or a non-empty list of ints in 0..{top}")
    out = []
    for x in layers:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= top:
            raise ValueError(
                f"{what} entry {x!r} is out of range: residual layers of {model.name} are 0..{top} "
                f"(resid_pre[l]; {top} = after the last block)"
            )
        out.append(x)
    return out


def _check_pos(pos: Any, t: int, what: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, int) or not -t <= pos < t:
        raise ValueError(f"{what} must be an int in {-t}..{t - 1} for this {t}-token prompt, got {pos!r}")
    return pos % t


def source_states(model: Model, tokens: torch.Tensor, position: int, layers: list[int]) -> torch.Tensor:
    """``[len(layers), d_model]``: the residual stream at ``position`` for each layer
    (``resid_pre[l]``, or the last block's output for ``l = n_layers``)."""
    reads = [("resid_pre", x) if x < model.n_layers else ("resid_post", model.n_layers - 1) for x in layers]
    got = model.run(tokens, list(dict.fromkeys(reads)))
    return torch.stack([got[r][position] for r in reads])


def _generate(
    model: Model,
    target_ids: torch.Tensor,
    position: int,
    rows: list[tuple[int, torch.Tensor | None]],
    n_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batched nnsight ``generate`` over the inspection prompt; row ``r`` gets state
    ``rows[r][1]`` written at target layer ``rows[r][0]`` (``None``: no patch) in the first
    forward. Returns the new token ids ``[R, n_tokens]`` (-1 after end-of-text) and the first
    token's probability ``[R]``."""
    n = len(rows)
    batch = target_ids.repeat(n, 1).to(model.device)
    t = target_ids.shape[1]
    by_layer: dict[int, list[int]] = {}
    for r, (layer, vec) in enumerate(rows):
        if vec is not None:
            by_layer.setdefault(layer, []).append(r)
    pad = model.tokenizer.pad_token_id
    eos = model.tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(
        max_new_tokens=n_tokens, do_sample=False, temperature=None, top_k=None, top_p=None,
        pad_token_id=pad if pad is not None else eos,
    )
    from ..interventions.engine import _unembed_path
    from ..model import _get

    unembed = _get(model.nn, _unembed_path(model))
    L = model.n_layers
    hf_log = logging.getLogger("transformers")
    level = hf_log.level
    # generate() logs an attention-mask advice when pad == bos == eos (the zoo models); the
    # mask is given, so the advice is noise
    hf_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*attention_mask.*")
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            inputs = {"input_ids": batch, "attention_mask": torch.ones_like(batch)}
            # the writes prepared outside the trace: its body names no Model (a remote request
            # ships what the body names)
            writes = [
                (
                    torch.tensor(by_layer[layer], device=model.device),
                    torch.stack([rows[r][1] for r in by_layer[layer]]).to(model.device),  # type: ignore[misc]
                    model._module(min(layer, L - 1), ""),
                    layer >= L,
                )
                for layer in sorted(by_layer)
            ]
            with torch.no_grad(), model.nn.generate(inputs, remote=model.remote, **kwargs) as tracer:
                for idx, vecs, block, at_output in writes:
                    if at_output:
                        h = block.output
                        h = h[0] if isinstance(h, (tuple, list)) else h
                    else:
                        h = block.input
                    h[idx, position] = vecs.to(h.dtype)
                # first step only (no tracer.all()): the top-1 probability, not the vocabulary
                probs = torch.softmax(unembed.output[:, -1].float(), -1).max(-1).values.save()
                out = tracer.result.save()
    finally:
        hf_log.setLevel(level)
    new = out[:, t:].cpu()
    ids = torch.full((n, n_tokens), -1, dtype=torch.long)
    for r in range(n):
        for k in range(min(n_tokens, new.shape[1])):
            ids[r, k] = int(new[r, k])
            if eos is not None and int(new[r, k]) == eos:
                break
    return ids, probs.detach().float().cpu()


def patchscope(
    model: Model,
    source: str,
    source_layers: Any = "all",
    source_position: int = -1,
    *,
    target_prompt: str | None = None,
    target_position: int | None = None,
    target_layers: Any = "same",
    n_tokens: int = 4,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PatchscopeResult:
    """Decode the residual stream of ``source`` at ``source_position`` for each of
    ``source_layers`` by patching it into ``target_prompt`` at ``target_position`` and
    generating ``n_tokens`` greedy tokens.

    ``target_layers``: ``"same"`` (each source layer written at the same layer: a source-layer
    table), ``"all"`` or a list (a source × target table). ``target_prompt`` /
    ``target_position`` default to :func:`inspection_prompt`. Cells (plus one unpatched row)
    run as rows of batched generations of ``batch_size`` rows (default 64);
    ``progress(done, total)`` is called after each. All checks run before the first forward
    pass; interrupting between batches leaves the model as it was (nnsight removes its hooks
    when a trace exits).
    """
    check_model(model)
    if not model.causal or model.arch.unembed is None:
        raise ValueError(f"{model.name} ({model.family}) is not a causal language model; patchscopes generate text")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or not 1 <= n_tokens <= 64:
        raise ValueError(f"n_tokens must be an int in 1..64, got {n_tokens!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    rows_per = batch_size or _MAX_ROWS
    src_layers = _check_layers(model, source_layers, "source_layers")
    same = isinstance(target_layers, str) and target_layers == "same"
    tgt_layers = None if same else _check_layers(model, target_layers, "target_layers")
    src_ids = model.to_tokens(source)
    spos = _check_pos(source_position, src_ids.shape[1], "source_position")
    if target_prompt is None:
        target_prompt, default_pos = inspection_prompt(model)
    else:
        default_pos = -1
    tgt_ids = model.to_tokens(target_prompt)
    tpos = _check_pos(default_pos if target_position is None else target_position, tgt_ids.shape[1], "target_position")
    if tgt_ids.shape[1] + n_tokens > model.n_ctx:
        raise ValueError(
            f"inspection prompt ({tgt_ids.shape[1]} tokens) + n_tokens ({n_tokens}) exceeds "
            f"{model.name}'s context of {model.n_ctx}"
        )
    states = source_states(model, src_ids, spos, src_layers)
    rows: list[tuple[int, torch.Tensor | None]] = [(0, None)]  # row 0: unpatched baseline
    cells: list[tuple[int, int]] = []
    for i, sl in enumerate(src_layers):
        for j, tl in enumerate([sl] if same else tgt_layers or []):
            rows.append((tl, states[i]))
            cells.append((i, j))
    total = len(rows)
    ids = torch.empty(total, n_tokens, dtype=torch.long)
    probs = torch.empty(total)
    done = 0
    for start in range(0, total, rows_per):
        chunk = rows[start : start + rows_per]
        ids[start : start + len(chunk)], probs[start : start + len(chunk)] = _generate(
            model, tgt_ids, tpos, chunk, n_tokens
        )
        done += len(chunk)
        if callable(progress):  # False/None: nothing to call
            progress(done, total)
    n_t = 1 if same else len(tgt_layers or [])
    grid_ids = torch.full((len(src_layers), n_t, n_tokens), -1, dtype=torch.long)
    grid_p = torch.zeros(len(src_layers), n_t)
    texts = [["" for _ in range(n_t)] for _ in src_layers]

    def decode(row: torch.Tensor) -> str:
        return model.tokenizer.decode([int(x) for x in row.tolist() if x >= 0], skip_special_tokens=True)

    for r, (i, j) in enumerate(cells, start=1):
        grid_ids[i, j] = ids[r]
        grid_p[i, j] = probs[r]
        texts[i][j] = decode(ids[r])
    return PatchscopeResult(
        model_name=model.name,
        source_text=source,
        source_tokens=model.to_str_tokens(src_ids),
        source_position=spos,
        target_prompt=target_prompt,
        target_tokens=model.to_str_tokens(tgt_ids),
        target_position=tpos,
        source_layers=src_layers,
        target_layers=tgt_layers,
        texts=texts,
        token_ids=grid_ids,
        first_prob=grid_p,
        baseline=decode(ids[0]),
        n_tokens=n_tokens,
        model=model,
    )

