"""Token-level activations: what each unit of a site does at each token of some texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_each_text, check_model, check_vector
from .._views import DisplaysAsView
from ..model import TOKEN_SITES, Model


def unit_kind(site: str) -> str:
    return {"mlp_post": "neuron", "head_out": "head"}.get(site, "dim")


def check_texts(texts: str | list[str]) -> list[str]:
    """Normalise ``texts`` to a non-empty list of non-empty strings, or raise ``ValueError``."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or len(texts) == 0:
        raise ValueError("texts must be a string or a non-empty list of strings")
    return check_each_text(texts, "texts")


def check_token_site(model: Model, site: str, layer: int) -> None:
    model.check_site(site, layer)
    if site not in TOKEN_SITES:
        raise ValueError(
            f"site {site!r} has no per-token vector; TokenActivations takes one of {', '.join(TOKEN_SITES)}"
        )


@dataclass
class TokenActivationsResult(DisplaysAsView):
    """Activations of every unit of ``site`` at ``layer`` for every token of ``texts``.

    ``acts`` is ``[N, n_units]`` float32 over the texts' tokens concatenated (``offsets[i]`` is
    where text ``i`` starts). Units are MLP neurons for ``mlp_post``, residual dimensions for
    the residual and sublayer-output sites, and heads for ``head_out`` (value: the L2 norm of
    the head's write into the residual stream, in residual-stream units).

    A text longer than the model's context was run in overlapping windows (``window`` tokens
    each, ``stride`` apart); its values are stitched as :func:`token_activations` describes.
    """

    model_name: str
    site: str
    layer: int
    texts: list[str]
    str_tokens: list[list[str]]
    token_ids: list[list[int]]
    acts: torch.Tensor
    direction: torch.Tensor | None = None
    direction_label: str = ""
    model: Model | None = field(default=None, repr=False, compare=False)
    #: the sparse dictionary (SAE, transcoder) whose features are the units, or ``None``
    dictionary: Any = field(default=None, repr=False, compare=False)
    #: tokens per forward pass and the step between windows of the texts longer than the
    #: model's context (``None`` when no text needed windows); see :func:`token_activations`
    window: int | None = None
    stride: int | None = None

    @property
    def offsets(self) -> list[int]:
        out, n = [], 0
        for toks in self.str_tokens:
            out.append(n)
            n += len(toks)
        return out

    @property
    def n_units(self) -> int:
        return int(self.acts.shape[1])

    @property
    def unit_kind(self) -> str:
        return "feature" if self.dictionary is not None else unit_kind(self.site)

    def unit_values(self, unit: int | torch.Tensor) -> torch.Tensor:
        """Values ``[N]`` of one unit (int) or of a direction (a ``[n_units]`` vector: the dot
        product of each token's activation vector with it)."""
        if isinstance(unit, torch.Tensor):
            v = check_vector(unit, self.n_units, "direction", self.site).cpu()
            return self.acts @ v
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < self.n_units:
            raise ValueError(
                f"unit must be an int in 0..{self.n_units - 1} for {self.site} at layer {self.layer}, got {unit!r}"
            )
        return self.acts[:, unit]

    def topk(self, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k units by value at each token: ``(indices [N, k], values [N, k])``."""
        k = min(k, self.n_units)
        vals, idx = torch.topk(self.acts, k, dim=1)
        return idx, vals

    def top_tokens(self, unit: int | torch.Tensor, k: int = 10) -> list[tuple[int, int, str, float]]:
        """The k tokens where ``unit`` is largest: ``(text, position, token, value)``."""
        vals = self.unit_values(unit)
        k = min(k, vals.shape[0])
        top = torch.topk(vals, k)
        where = [(ti, p) for ti, toks in enumerate(self.str_tokens) for p in range(len(toks))]
        return [
            (where[i][0], where[i][1], self.str_tokens[where[i][0]][where[i][1]], float(v))
            for v, i in zip(top.values.tolist(), top.indices.tolist())
        ]

    def to_pandas(self, unit: int | torch.Tensor | None = None, k: int = 5) -> Any:
        """Tidy table. With ``unit``: one row per token (text, position, token, value).
        Without: one row per (token, rank) for the top-k units at each token."""
        import pandas as pd

        rows = []
        flat = [(ti, p, tok) for ti, toks in enumerate(self.str_tokens) for p, tok in enumerate(toks)]
        if unit is not None:
            vals = self.unit_values(unit).tolist()
            for (ti, p, tok), v in zip(flat, vals):
                rows.append({"text": ti, "position": p, "token": tok, "value": v})
            return pd.DataFrame(rows)
        idx, vals = self.topk(k)
        for n, (ti, p, tok) in enumerate(flat):
            for r in range(idx.shape[1]):
                rows.append(
                    {
                        "text": ti,
                        "position": p,
                        "token": tok,
                        "rank": r,
                        self.unit_kind: int(idx[n, r]),
                        "value": float(vals[n, r]),
                    }
                )
        return pd.DataFrame(rows)

    def plot(self, unit: int | torch.Tensor | None = None, ax: Any = None) -> Any:
        """Matplotlib figure: tokens of the first text coloured by ``unit`` (default: the unit
        with the largest activation anywhere)."""
        import matplotlib.pyplot as plt
        from matplotlib import colors

        if unit is None:
            unit = self.direction if self.direction is not None else int(self.acts.max(0).values.argmax())
        vals = self.unit_values(unit)
        toks = self.str_tokens[0]
        v = vals[: len(toks)].numpy()
        m = float(abs(v).max()) or 1.0
        norm = colors.TwoSlopeNorm(vmin=-m, vcenter=0.0, vmax=m)
        cmap = plt.get_cmap("RdBu_r")
        per_row = 12
        rows = (len(toks) + per_row - 1) // per_row
        if ax is None:
            fig, ax = plt.subplots(figsize=(12, 0.45 * rows + 0.8))
        else:
            fig = ax.figure
        ax.set_axis_off()
        for i, tok in enumerate(toks):
            r, c = divmod(i, per_row)
            ax.text(
                c / per_row, 1 - (r + 0.5) / rows, tok.replace("\n", "\\n"),
                ha="left", va="center", fontsize=9, family="monospace",
                bbox={"facecolor": cmap(norm(v[i])), "edgecolor": "none", "pad": 2},
            )
        label = self.direction_label if isinstance(unit, torch.Tensor) else f"{self.unit_kind} {unit}"
        ax.set_title(f"{self.model_name} · {self.site} layer {self.layer} · {label}")
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, orientation="horizontal", fraction=0.05)
        return fig

    def to_circuitsvis(self, unit: int | torch.Tensor | None = None, units: list[int] | None = None) -> Any:
        """The CircuitsVis counterpart of this view, for users who already use it (needs
        ``pip install circuitsvis``): ``colored_tokens`` for one unit, or
        ``colored_tokens_multi`` for a list of ``units``. Texts are concatenated."""
        try:
            import circuitsvis.tokens as cv
        except ImportError:
            raise ImportError("to_circuitsvis() needs CircuitsVis: pip install circuitsvis") from None
        tokens = [t for toks in self.str_tokens for t in toks]
        if units is not None:
            values = torch.stack([self.unit_values(u) for u in units], dim=1)
            return cv.colored_tokens_multi(tokens, values, labels=[f"{self.unit_kind} {u}" for u in units])
        if unit is None:
            unit = self.direction if self.direction is not None else int(self.acts.max(0).values.argmax())
        return cv.colored_tokens(tokens, self.unit_values(unit).tolist())


def token_activations(
    model: Model,
    texts: str | list[str],
    site: str = "mlp_post",
    layer: int = 0,
    *,
    direction: torch.Tensor | None = None,
    direction_label: str = "direction",
    dictionary: Any = None,
    progress: Any = None,
    window: int | None = None,
    stride: int | None = None,
) -> TokenActivationsResult:
    """Activations of ``site`` at ``layer`` for every token of ``texts`` (one nnsight trace per
    text). ``progress(done, total)`` is called after each forward pass (one per text, or one
    per window of a windowed text; the widget uses it); without it, 16 texts or more show a
    tqdm bar. Interrupting between texts leaves the model as it was
    (nnsight removes its hooks when a trace exits).

    ``dictionary``: a sparse dictionary (an SAE or transcoder: ``encode``, ``d_in``, ``d_sae``,
    ``site``, ``layer``); the units are then its features, ``dictionary.encode`` of each token's
    activation at the dictionary's own site and layer (``site``/``layer`` must match them).

    Texts longer than the model's context (``model.n_ctx`` tokens) are refused unless
    ``window`` is given. With ``window=W`` (at most ``n_ctx``), such a text runs as overlapping
    windows of ``W`` tokens (one trace each), starting ``stride`` tokens apart (default
    ``W // 2``); the last window ends at the text's end. A leading BOS token is put at the
    start of every window (and counts in ``W``), so each window reads like a text of its own.
    Each token takes its value from the window in which it has the most left context, which is
    the earliest window that contains it: the first window gives its first ``W`` tokens, every
    later window only the tokens beyond the previous window's end, each of which has at least
    ``W - stride`` tokens of left context (``W - stride - 1`` besides the BOS). A text that
    fits the context runs whole whether or not ``window`` is given, so its values are the
    same either way."""
    check_model(model)
    texts = check_texts(texts)
    window, stride = _check_window(model, window, stride)
    if dictionary is not None:
        for attr in ("encode", "site", "layer", "d_in", "d_sae"):
            if not hasattr(dictionary, attr):
                raise ValueError(f"dictionary must be an SAE-like object with .{attr}; got {type(dictionary).__name__}")
        if (site, layer) != (dictionary.site, dictionary.layer):
            raise ValueError(
                f"the dictionary reads {dictionary.site} at layer {dictionary.layer}, not {site} at layer "
                f"{layer}; pass site={dictionary.site!r}, layer={dictionary.layer} (or leave them to the dictionary)"
            )
    check_token_site(model, site, layer)
    if dictionary is not None and model.site_width(site) != dictionary.d_in:
        raise ValueError(
            f"the dictionary expects {dictionary.d_in}-wide inputs but {site} of {model.name} is "
            f"{model.site_width(site)} wide: it was trained on another model"
        )
    if direction is not None and dictionary is not None:
        raise ValueError("give a direction or a dictionary, not both")
    if direction is not None:
        direction = check_vector(direction, model.site_width(site), "direction", site).cpu()
    token_ids = [_tokens(model, t, i, window) for i, t in enumerate(texts)]  # lengths checked before any forward
    windowed = any(ids.shape[1] > model.n_ctx for ids in token_ids)
    plans = [
        None if ids.shape[1] <= model.n_ctx else window_plan(ids.shape[1], window, stride, _bos_prefix(model, ids))
        for ids in token_ids
    ]
    passes = sum(1 if p is None else len(p) for p in plans)
    bar = None
    if progress is None and (len(texts) >= 16 or passes >= 16):
        from tqdm.auto import tqdm

        bar = tqdm(total=passes, desc=f"{site} L{layer}", unit="pass", leave=False)
    chunks = []
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, passes)
        if bar is not None:
            bar.update(1)

    try:
        for ids, plan in zip(token_ids, plans):
            if plan is None:
                value = _values(model, ids, site, layer, dictionary)
                step()
            else:
                parts = []
                for win, keep in plan:
                    parts.append(_values(model, ids[:, win], site, layer, dictionary)[keep])
                    step()
                value = torch.cat(parts, dim=0)
            chunks.append(value)
    finally:
        if bar is not None:
            bar.close()
    return TokenActivationsResult(
        model_name=model.name,
        site=site,
        layer=layer,
        texts=texts,
        str_tokens=[model.to_str_tokens(ids) for ids in token_ids],
        token_ids=[ids[0].tolist() for ids in token_ids],
        acts=torch.cat(chunks, dim=0),
        direction=direction,
        direction_label=direction_label,
        model=model,
        dictionary=dictionary,
        window=window if windowed else None,
        stride=stride if windowed else None,
    )


def _check_window(model: Model, window: Any, stride: Any) -> tuple[int | None, int | None]:
    if window is None:
        if stride is not None:
            raise ValueError("stride= only applies with window=; pass window= too (tokens per forward pass)")
        return None, None
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"window must be an int (tokens per forward pass) or None, got {type(window).__name__}")
    if not 2 <= window <= model.n_ctx:
        raise ValueError(f"window must be in 2..{model.n_ctx} ({model.name}'s context), got {window}")
    if stride is None:
        stride = max(1, window // 2)
    if isinstance(stride, bool) or not isinstance(stride, int):
        raise TypeError(f"stride must be an int (tokens between window starts) or None, got {type(stride).__name__}")
    if not 1 <= stride <= window - 1:
        raise ValueError(
            f"stride must be in 1..{window - 1} (less than window={window}, so that windows overlap "
            f"and every token gets left context), got {stride}"
        )
    return window, stride


def _tokens(model: Model, text: str, index: int, window: int | None) -> torch.Tensor:
    """The text's ids ``[1, T]``; ``T`` may exceed ``n_ctx`` only with a window."""
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise ValueError(f"texts[{index}] produced no tokens")
    if ids.shape[1] > model.n_ctx and window is None:
        raise ValueError(
            f"texts[{index}] is {ids.shape[1]} tokens long but {model.name} takes at most {model.n_ctx}; "
            f"pass window={model.n_ctx} (and optionally stride=) to run it in overlapping windows whose "
            "values are stitched together, or shorten it"
        )
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= model.d_vocab:  # as model.to_tokens / run would refuse, before any forward
        raise ValueError(f"texts[{index}] has token id {lo if lo < 0 else hi}, outside {model.name}'s vocabulary")
    return ids


def _bos_prefix(model: Model, ids: torch.Tensor) -> int:
    """1 if the text starts with the tokenizer's BOS (repeated at the start of each window), else 0."""
    bos = getattr(model.tokenizer, "bos_token_id", None)
    return int(bos is not None and int(ids[0, 0]) == bos)


def window_plan(n: int, window: int, stride: int, prefix: int = 0) -> list[tuple[list[int], slice]]:
    """The windows over ``n`` token positions and what each contributes.

    Returns ``(positions, keep)`` per window: the text positions one forward pass reads (the
    first ``prefix`` positions, a BOS, then a run of the rest) and the slice of that pass's
    output that the stitched result takes from it: the tokens it is the earliest window to
    hold (so each token gets the most left context any window gives it). Body windows start
    ``stride`` apart; the last is moved back so that it ends at ``n``.
    """
    body_len = window - prefix
    body = n - prefix
    if body_len < 1:
        raise ValueError(f"window={window} leaves no room for text after the BOS token")
    starts = list(range(0, max(body - body_len, 0) + 1, stride))
    if starts[-1] + body_len < body:
        starts.append(body - body_len)
    plan: list[tuple[list[int], slice]] = []
    done = 0  # body positions already covered by earlier windows
    for k, s in enumerate(starts):
        end = min(s + body_len, body)
        positions = list(range(prefix)) + list(range(prefix + s, prefix + end))
        first = 0 if k == 0 else prefix + (done - s)  # keep the BOS from the first window only
        plan.append((positions, slice(first, len(positions))))
        done = end
    return plan


def _values(model: Model, ids: torch.Tensor, site: str, layer: int, dictionary: Any) -> torch.Tensor:
    """``[T, n_units]`` values of one forward pass over ``ids``."""
    value = model.run(ids, [(site, layer)])[(site, layer)]
    if site == "head_out":
        value = value.norm(dim=-1)
    if dictionary is not None:
        with torch.no_grad():
            value = dictionary.encode(value.to(_param_device(dictionary, value))).float().cpu()
    return value


def _param_device(module: Any, like: torch.Tensor) -> torch.device:
    params = getattr(module, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return like.device
