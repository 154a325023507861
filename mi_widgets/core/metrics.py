"""Metrics for causal interventions: small objects that turn last-position logits into one number
per prompt.

A metric takes logits ``[batch, vocab]`` (the model's prediction at the final position) and
returns ``[batch]``. Three are built in:

- :func:`logit_diff` ``(correct, wrong)``: ``logit[correct] - logit[wrong]``, in logits (nats of
  log-odds between the two tokens);
- :func:`prob` ``(token)``: the softmax probability of ``token``;
- :func:`kl_to_clean` ``()``: ``KL(p_clean || p)`` in nats, the divergence of the prediction from
  the clean run's prediction (0 when they agree).

Any callable ``f(logits) -> [batch]`` works too. Tokens may be strings (each must be exactly one
token; :meth:`Metric.bind` checks that against the model's tokenizer before any forward pass) or
token ids; a list gives one token per prompt (per prompt pair in patching).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

TokenLike = str | int
TokenSpec = TokenLike | Sequence[TokenLike]


class Metric:
    """A function of last-position logits ``[batch, vocab] -> [batch]``.

    ``needs_clean``: the metric also reads the clean run's logits (``kl_to_clean``).
    Call it as ``metric(logits)``; the patching code passes ``pairs`` (which prompt pair each row
    belongs to, for per-pair tokens) and ``clean_logits`` (the clean run's logits of each row).
    """

    name: str = "metric"
    needs_clean: bool = False

    def bind(self, model: Any) -> Metric:
        """A copy with its tokens resolved against ``model``'s tokenizer (raises ``ValueError``
        naming any token that is not exactly one token)."""
        return self

    def check_batch(self, n: int) -> None:
        """Raise ``ValueError`` if per-prompt token lists do not have ``n`` entries."""

    def __call__(
        self,
        logits: torch.Tensor,
        *,
        pairs: torch.Tensor | None = None,
        clean_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


def token_id(model_or_tokenizer: Any, token: TokenLike, *, role: str = "token") -> int:
    """The id of ``token`` (a string that must be exactly one token, or an id), or a
    ``ValueError`` that says how the string tokenises."""
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    vocab = len(tok) if tok is not None else None
    if isinstance(token, bool):
        raise ValueError(f"{role} must be a string or a token id, got {token!r}")
    if isinstance(token, int) or (isinstance(token, torch.Tensor) and token.ndim == 0):
        i = int(token)
        d_vocab = getattr(model_or_tokenizer, "d_vocab", None) or vocab
        if d_vocab is not None and not 0 <= i < d_vocab:
            raise ValueError(
                f"{role} id {i} is out of range: the vocabulary has {d_vocab} tokens (0..{d_vocab - 1})"
            )
        return i
    if not isinstance(token, str):
        raise ValueError(f"{role} must be a string or a token id, got {type(token).__name__}")
    if token == "":
        raise ValueError(f"{role} is an empty string; give exactly one token, e.g. ' Paris'")
    if tok is None:
        raise ValueError(
            f"{role} {token!r} is a string; bind the metric to a model (metric.bind(model)) first"
        )
    ids = tok(token, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    pieces = [tok.decode([i]) for i in ids]
    hint = ""
    if not token.startswith(" "):
        spaced = tok(" " + token, add_special_tokens=False)["input_ids"]
        if len(spaced) == 1:
            hint = f"; with a leading space, {' ' + token!r} is one token (id {spaced[0]})"
    elif len(ids) > 1:
        hint = f"; use a single token such as {pieces[0]!r}, or pass a token id"
    raise ValueError(
        f"{role} {token!r} is not exactly one token: it tokenises to {len(ids)} tokens {pieces} "
        f"(ids {list(ids)}){hint}"
    )


def _resolve(model: Any, spec: TokenSpec, role: str) -> int | list[int]:
    if isinstance(spec, (list, tuple)):
        if len(spec) == 0:
            raise ValueError(f"{role} is an empty list; give one token per prompt")
        ids = [token_id(model, t, role=f"{role}[{i}]") for i, t in enumerate(spec)]
        return ids[0] if len(ids) == 1 else ids  # a one-entry list applies to every prompt
    return token_id(model, spec, role=role)


def _describe(spec: TokenSpec, model: Any = None) -> str:
    """How a token spec reads in a metric's name: the string, an id decoded where a tokenizer is
    at hand, or "<n> tokens" for one token per prompt."""
    if isinstance(spec, (list, tuple)):
        return f"{len(spec)} tokens" if len(spec) > 1 else _describe(spec[0], model)
    tok = getattr(model, "tokenizer", None)
    if isinstance(spec, int) and not isinstance(spec, bool) and tok is not None:
        try:
            return repr(tok.decode([spec]))
        except Exception:  # noqa: BLE001 - a name is cosmetic
            return repr(spec)
    return repr(spec)


def _column(logits: torch.Tensor, ids: int | list[int], pairs: torch.Tensor | None) -> torch.Tensor:
    """``logits[row, id_of(row)]`` where ``ids`` is one id or one per pair."""
    if isinstance(ids, int):
        return logits[:, ids]
    per_pair = torch.tensor(ids, device=logits.device)
    rows = (
        torch.arange(logits.shape[0], device=logits.device)
        if pairs is None
        else pairs.to(logits.device)
    )
    if rows.numel() and int(rows.max()) >= len(ids):
        raise ValueError(
            f"the metric has {len(ids)} per-prompt tokens but was given {logits.shape[0]} rows"
        )
    return logits.gather(1, per_pair[rows][:, None])[:, 0]


def _check_len(spec: TokenSpec, n: int, role: str) -> None:
    if isinstance(spec, (list, tuple)) and len(spec) not in (1, n):
        raise ValueError(
            f"{role} lists {len(spec)} tokens but there are {n} prompts (pairs); give one per prompt"
        )


class LogitDiff(Metric):
    """``logit[correct] - logit[wrong]`` at the final position."""

    def __init__(self, correct: TokenSpec, wrong: TokenSpec, *, _ids: tuple | None = None):
        self.correct, self.wrong = correct, wrong
        self._ids = _ids
        self.name = f"logit_diff({_describe(correct)}, {_describe(wrong)})"

    def bind(self, model: Any) -> LogitDiff:
        ids = (
            _resolve(model, self.correct, "correct token"),
            _resolve(model, self.wrong, "wrong token"),
        )
        out = LogitDiff(self.correct, self.wrong, _ids=ids)
        out.name = f"logit_diff({_describe(self.correct, model)}, {_describe(self.wrong, model)})"
        return out

    def check_batch(self, n: int) -> None:
        _check_len(self.correct, n, "correct")
        _check_len(self.wrong, n, "wrong")

    def _ids_or_raise(self) -> tuple:
        if self._ids is not None:
            return self._ids
        return (
            _resolve(None, self.correct, "correct token"),
            _resolve(None, self.wrong, "wrong token"),
        )

    def __call__(self, logits, *, pairs=None, clean_logits=None):
        a, b = self._ids_or_raise()
        logits = logits.float()
        return _column(logits, a, pairs) - _column(logits, b, pairs)


class Prob(Metric):
    """Softmax probability of ``token`` at the final position."""

    def __init__(self, token: TokenSpec, *, _id: Any = None):
        self.token = token
        self._id = _id
        self.name = f"prob({_describe(token)})"

    def bind(self, model: Any) -> Prob:
        out = Prob(self.token, _id=_resolve(model, self.token, "token"))
        out.name = f"prob({_describe(self.token, model)})"
        return out

    def check_batch(self, n: int) -> None:
        _check_len(self.token, n, "token")

    def __call__(self, logits, *, pairs=None, clean_logits=None):
        i = self._id if self._id is not None else _resolve(None, self.token, "token")
        return _column(torch.softmax(logits.float(), dim=-1), i, pairs)


class KLToClean(Metric):
    """``KL(p_clean || p)`` in nats: 0 when the prediction equals the clean run's."""

    name = "kl_to_clean"
    needs_clean = True

    def __call__(self, logits, *, pairs=None, clean_logits=None):
        if clean_logits is None:
            raise ValueError("kl_to_clean needs the clean run's logits (clean_logits=...)")
        lp = torch.log_softmax(logits.float(), dim=-1)
        lc = torch.log_softmax(clean_logits.float().to(lp.device), dim=-1)
        return (lc.exp() * (lc - lp)).sum(-1)


class FunctionMetric(Metric):
    """Wraps a user callable ``f(logits [batch, vocab]) -> [batch]``."""

    def __init__(self, fn: Callable[[torch.Tensor], Any], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__
        if self.name == "<lambda>":
            self.name = "custom metric"

    def __call__(self, logits, *, pairs=None, clean_logits=None):
        out = torch.as_tensor(self.fn(logits))
        if out.ndim == 0 and logits.shape[0] == 1:
            out = out.reshape(1)
        if out.shape != (logits.shape[0],):
            raise ValueError(
                f"metric {self.name!r} must return one number per row, shape [{logits.shape[0]}], "
                f"but returned shape {list(out.shape)}"
            )
        return out.float()


def logit_diff(correct: TokenSpec, wrong: TokenSpec) -> LogitDiff:
    """``logit[correct] - logit[wrong]`` at the final position. Each of ``correct`` and ``wrong``
    is a one-token string (e.g. ``" Paris"``), a token id, or a list of those, one per prompt."""
    return LogitDiff(correct, wrong)


def prob(token: TokenSpec) -> Prob:
    """Probability of ``token`` (a one-token string, an id, or one per prompt) at the final position."""
    return Prob(token)


def kl_to_clean() -> KLToClean:
    """``KL(p_clean || p)`` in nats between the clean run's next-token distribution and this
    run's (so 0 on the clean run itself)."""
    return KLToClean()


def as_metric(metric: Any) -> Metric:
    """A :class:`Metric` from a metric object or a plain callable on logits."""
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return FunctionMetric(metric)
    raise ValueError(
        f"metric must be a Metric (logit_diff, prob, kl_to_clean) or a callable on logits "
        f"[batch, vocab] -> [batch], got {type(metric).__name__}"
    )


__all__ = [
    "FunctionMetric",
    "KLToClean",
    "LogitDiff",
    "Metric",
    "Prob",
    "as_metric",
    "kl_to_clean",
    "logit_diff",
    "prob",
    "token_id",
]
