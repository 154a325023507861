"""Attention patterns and head scores (previous-token, duplicate-token, induction, BOS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from .._views import Viewable
from ..model import Model

SCORE_KINDS = ("previous_token", "duplicate_token", "induction", "bos")


def score_patterns(patterns: torch.Tensor, tokens: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Head scores ``{kind: [n_layers, n_heads]}`` of attention ``patterns``
    ``[n_layers, n_heads, T, T]`` (query, key) over the token ids ``tokens`` ``[T]``.

    - ``previous_token``: mean attention from i to i-1, over i >= 1;
    - ``duplicate_token``: attention from i to the earlier positions holding the same token,
      averaged over the positions that have one;
    - ``induction``: attention from i to j+1 for every earlier j holding the same token as i,
      averaged over the positions that have one;
    - ``bos``: mean attention to position 0, over i >= 1 (position 0 can only attend to itself).

    A score with no position to average over is NaN.
    """
    a = patterns.float()
    t = a.shape[-1]
    toks = torch.as_tensor(tokens).reshape(-1)
    if toks.shape[0] != t:
        raise ValueError(f"{toks.shape[0]} tokens for patterns over {t} positions")
    nan = torch.full(a.shape[:2], float("nan"))
    out: dict[str, torch.Tensor] = {}
    i = torch.arange(1, t)
    out["previous_token"] = a[..., i, i - 1].mean(-1) if t > 1 else nan
    out["bos"] = a[..., 1:, 0].mean(-1) if t > 1 else nan
    same = (toks[:, None] == toks[None, :]) & torch.ones(t, t, dtype=torch.bool).tril(-1)  # [i, j], j < i
    has = same.any(1)
    if has.any():
        dup = (a * same).sum(-1)  # [L, H, T]
        shifted = torch.zeros(t, t, dtype=torch.bool)
        shifted[:, 1:] = same[:, :-1]  # key j+1 for every earlier duplicate j
        ind = (a * shifted).sum(-1)
        out["duplicate_token"] = dup[..., has].mean(-1)
        out["induction"] = ind[..., has].mean(-1)
    else:
        out["duplicate_token"] = nan.clone()
        out["induction"] = nan.clone()
    return {kind: out[kind] for kind in SCORE_KINDS}


def _scores_table(scores: dict[str, torch.Tensor]) -> Any:
    import pandas as pd

    rows = []
    for kind, s in scores.items():
        for layer in range(s.shape[0]):
            for head in range(s.shape[1]):
                rows.append({"layer": layer, "head": head, "score": kind, "value": float(s[layer, head])})
    return pd.DataFrame(rows)


def _plot_scores(scores: dict[str, torch.Tensor], title: str, kinds: list[str] | None = None) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = list(kinds or scores)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds) + 0.5, 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        s = scores[kind].numpy()
        im = ax.imshow(s, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(kind.replace("_", " "), fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(s.shape[1]))
        ax.set_yticks(range(s.shape[0]))
        for (layer, head), v in np.ndenumerate(s):
            ax.text(head, layer, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.6 else "black")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03)
    fig.suptitle(title, fontsize=10)
    return fig


def _top(scores: dict[str, torch.Tensor], kind: str, k: int) -> list[tuple[str, float]]:
    if kind not in scores:
        raise ValueError(f"kind must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    s = scores[kind]
    flat = torch.nan_to_num(s, nan=float("-inf")).reshape(-1)
    order = torch.argsort(flat, descending=True)[:k].tolist()
    n_heads = s.shape[1]
    return [(f"{i // n_heads}.{i % n_heads}", float(s.reshape(-1)[i])) for i in order]


@dataclass
class AttentionResult(Viewable):
    """Attention patterns ``[n_layers, n_heads, T, T]`` (query, key) of one text, its tokens,
    and head ``scores`` ``{kind: [n_layers, n_heads]}`` (see :func:`score_patterns`)."""

    model_name: str
    text: str
    str_tokens: list[str]
    token_ids: list[int]
    patterns: torch.Tensor
    scores: dict[str, torch.Tensor]
    model: Model | None = field(default=None, repr=False, compare=False)

    def top_heads(self, kind: str = "induction", k: int = 5) -> list[tuple[str, float]]:
        """The k heads (``"layer.head"``, score) with the highest ``kind`` score."""
        return _top(self.scores, kind, k)

    def to_pandas(self) -> Any:
        """Tidy table of head scores: layer, head, score (kind), value."""
        return _scores_table(self.scores)

    def plot(self, kinds: list[str] | None = None) -> Any:
        """Matplotlib figure: one layers × heads heatmap per score kind."""
        return _plot_scores(self.scores, f"{self.model_name} · head scores on {self.text[:40]!r}", kinds)

    def to_circuitsvis(self, layer: int = 0) -> Any:
        """CircuitsVis ``attention_patterns`` of one layer's heads (needs ``pip install circuitsvis``)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.patterns.shape[0]:
            raise ValueError(f"layer must be an int in 0..{self.patterns.shape[0] - 1}, got {layer!r}")
        try:
            import circuitsvis.attention as cva
        except ImportError:
            raise ImportError("to_circuitsvis() needs CircuitsVis: pip install circuitsvis") from None
        return cva.attention_patterns(tokens=self.str_tokens, attention=self.patterns[layer])


def attention(model: Model, text: str) -> AttentionResult:
    """Every head's attention pattern on ``text`` (one forward, eager attention) and its head scores."""
    check_model(model)
    ids = model.to_tokens(text)
    patterns = _patterns(model, ids)
    return AttentionResult(
        model_name=model.name,
        text=text,
        str_tokens=model.to_str_tokens(ids),
        token_ids=ids[0].tolist(),
        patterns=patterns,
        scores=score_patterns(patterns, ids[0]),
        model=model,
    )


def _patterns(model: Model, ids: torch.Tensor) -> torch.Tensor:
    model.check_site("attn_pattern")
    reads = [("attn_pattern", layer) for layer in range(model.n_layers)]
    out = model.run(ids, reads)
    return torch.stack([out[r] for r in reads])


@dataclass
class HeadScores:
    """Head scores ``{kind: [n_layers, n_heads]}`` averaged over ``n`` seeded random repeated
    sequences (BOS + A + A, A = ``seq_len`` distinct single-token words)."""

    model_name: str
    kind: str
    scores: dict[str, torch.Tensor]
    n: int
    seq_len: int
    seed: int
    tokens: torch.Tensor = field(repr=False)

    @property
    def values(self) -> torch.Tensor:
        """The ``kind`` scores ``[n_layers, n_heads]``."""
        return self.scores[self.kind]

    def top_heads(self, kind: str | None = None, k: int = 5) -> list[tuple[str, float]]:
        return _top(self.scores, kind or self.kind, k)

    def to_pandas(self) -> Any:
        return _scores_table(self.scores)

    def plot(self, kinds: list[str] | None = None) -> Any:
        return _plot_scores(
            self.scores, f"{self.model_name} · head scores on {self.n} repeated random sequences", kinds
        )


def _word_pool(model: Model, need: int, seed: int) -> list[int]:
    """Token ids that are ordinary single-token words: not special, decoding to a space and
    letters (any other printable token when there are too few), and encoding back to that id."""
    tok = model.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    g = torch.Generator().manual_seed(seed)
    words: list[int] = []
    others: list[int] = []
    want = max(4 * need, 64)
    for i in torch.randperm(model.d_vocab, generator=g).tolist():
        if i in special:
            continue
        s = tok.decode([i])
        if not s.strip() or tok(s, add_special_tokens=False)["input_ids"] != [i]:
            continue
        (words if s.startswith(" ") and s[1:].isalpha() else others).append(i)
        if len(words) >= want:
            break
    return words if len(words) >= need else words + others


def repeated_tokens(model: Model, n: int = 20, seq_len: int = 20, seed: int = 0) -> torch.Tensor:
    """``[n, 1 + 2*seq_len]`` ids: BOS (when the tokenizer has one), then ``seq_len`` distinct
    random single-token words, then the same words again."""
    for name, v in (("n", n), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    bos = model.tokenizer.bos_token_id
    total = 2 * seq_len + (bos is not None)
    if total > model.n_ctx:
        raise ValueError(f"sequences of {total} tokens exceed {model.name}'s context of {model.n_ctx}")
    pool = torch.tensor(_word_pool(model, seq_len, seed))
    if pool.numel() < seq_len:
        raise ValueError(
            f"{model.name}'s vocabulary has only {pool.numel()} single-token words; use seq_len <= {pool.numel()}"
        )
    g = torch.Generator().manual_seed(seed + 1)
    rows = []
    for _ in range(n):
        half = pool[torch.randperm(pool.numel(), generator=g)[:seq_len]]
        row = [half, half] if bos is None else [torch.tensor([bos]), half, half]
        rows.append(torch.cat(row))
    return torch.stack(rows)


def head_scores(
    model: Model, kind: str = "induction", n: int = 20, seq_len: int = 20, seed: int = 0
) -> HeadScores:
    """Every head's scores averaged over ``n`` seeded random repeated sequences (BOS + A + A),
    so previous-token and induction heads can be found on any model. ``kind`` picks the score
    that :meth:`HeadScores.top_heads` and :attr:`HeadScores.values` use; all kinds are computed."""
    check_model(model)
    if kind not in SCORE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    model.check_site("attn_pattern")
    tokens = repeated_tokens(model, n, seq_len, seed)
    sums: dict[str, torch.Tensor] = {}
    for row in tokens:
        s = score_patterns(_patterns(model, row[None]), row)
        for k, v in s.items():
            sums[k] = sums.get(k, 0) + v
    return HeadScores(
        model_name=model.name,
        kind=kind,
        scores={k: v / n for k, v in sums.items()},
        n=n,
        seq_len=seq_len,
        seed=seed,
        tokens=tokens,
    )
