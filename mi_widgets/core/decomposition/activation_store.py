"""Streaming activations of a model site over a text source, for training dictionaries.

:class:`ActivationStore` runs the model over texts (the embedded corpus by default, any
iterable of strings, or a ``datasets`` dataset by column name) in batched nnsight traces,
keeps the activations of every real token (BOS, padding and other special tokens are dropped)
in a fixed-size buffer, shuffles the buffer and yields batches of ``batch_size`` token vectors.

Memory bound: the buffer holds at most ``buffer_tokens`` vectors (it is allocated once, at that
size, and a text is only read when it fits). Shuffling is per buffer fill: when the buffer is
full it is permuted and drained in batches; the tokens that do not fill a last batch are carried
into the next fill.

Resumable: :meth:`ActivationStore.state_dict` records how many texts of the source were read
before the current fill, the random state at that point, how many batches of the fill were
already yielded and the carried-over tokens; :meth:`load_state_dict` (with the same source
passed again) re-reads that fill and continues with exactly the batches that had not been
yielded.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..model import Model

#: Sites with one vector per token that a store can read.
STORE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp_post")


@functools.lru_cache(maxsize=4)
def _corpus_rows(seed: int, n_rows: int) -> tuple[str, ...]:
    from ...zoo import corpus

    return tuple(corpus.training_rows(seed=seed, n_rows=n_rows))


def corpus_texts(seed: int = 0, n_rows: int | None = None) -> tuple[str, ...]:
    """The embedded corpus' training rows (the text zoo:tiny was trained on; built once)."""
    from ...zoo import corpus

    return _corpus_rows(seed, n_rows or corpus.N_ROWS)


def _is_hf_dataset(source: Any) -> bool:
    return hasattr(source, "column_names") and hasattr(source, "__getitem__") and hasattr(source, "__len__")


def _check_source(source: Any, column: str) -> None:
    if isinstance(source, str):
        raise ValueError("texts must be an iterable of strings (a list, a generator or a datasets.Dataset), not one string; wrap it in a list")
    if _is_hf_dataset(source):
        cols = list(source.column_names)
        if column not in cols:
            raise ValueError(f"the dataset has no column {column!r}; pass column= one of {cols}")
        return
    if not isinstance(source, Iterable):
        raise ValueError(f"texts must be an iterable of strings or a datasets.Dataset, got {type(source).__name__}")


def _iter_source(source: Any, column: str, skip: int) -> Iterator[str]:
    if _is_hf_dataset(source):
        for i in range(skip, len(source)):
            yield source[i][column]
    elif isinstance(source, (list, tuple)):
        yield from source[skip:]
    else:
        yield from itertools.islice(iter(source), skip, None)


def _batch_reads(
    model: Model, ids: torch.Tensor, mask: torch.Tensor, reads: list[tuple[str, int]]
) -> list[torch.Tensor]:
    """One batched nnsight trace over right-padded ``ids`` [B, T] that returns each read's value
    ``[B, T, d]`` (float32, CPU), in the order of ``reads``."""
    keys: dict[tuple[int, int, str, str], list[int]] = {}
    for j, (site, layer) in enumerate(reads):
        keys.setdefault(model._read_key(site, layer), []).append(j)
    saved: dict[tuple, Any] = {}
    # envoys looked up here: the trace body names no Model (a remote request ships what it names)
    plan = [(key, model._module(key[0], key[2]), key[3]) for key in sorted(keys)]
    with torch.no_grad(), model.nn.trace(ids.to(model.device), attention_mask=mask.to(model.device), remote=model.remote):
        for key, env, io in plan:
            saved[key] = (env.input if io == "input" else env.output).save()
    out: list[torch.Tensor] = [torch.empty(0)] * len(reads)
    for key, idx in keys.items():
        raw = saved[key]
        for j in idx:
            v = model._element(reads[j][0], raw)
            if isinstance(v, (tuple, list)):
                v = v[0]
            out[j] = v.detach().float().cpu()
    return out


def special_ids(model: Model) -> set[int]:
    tok = model.tokenizer
    ids = set(getattr(tok, "all_special_ids", []) or [])
    for name in ("bos_token_id", "pad_token_id", "eos_token_id"):
        v = getattr(tok, name, None)
        if v is not None:
            ids.add(int(v))
    return ids


def tokenize_batch(model: Model, texts: list[str], max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded token ids ``[B, T]``, attention mask and a ``keep`` mask of the real
    (non-special, non-pad) positions. Texts longer than the context are truncated."""
    max_len = max_len or model.n_ctx
    return pad_rows(model, [model.tokenizer(t)["input_ids"][:max_len] for t in texts])


def pad_rows(model: Model, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`tokenize_batch` for rows already tokenised."""
    T = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), T), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    specials = torch.tensor(sorted(special_ids(model)), dtype=torch.long)
    keep = mask.bool() & ~torch.isin(ids, specials)
    return ids, mask, keep


@dataclass
class StoreState:
    texts_read: int  # texts consumed before the current fill
    batches_done: int  # batches of the current fill already yielded
    tokens_yielded: int
    rng_state: torch.Tensor
    carry: torch.Tensor


class ActivationStore:
    """Shuffled batches ``[batch_size, d]`` of ``site`` activations at ``layer``.

    ``reads``: several ``(site, layer)`` pairs instead of one (for transcoders and crosscoders);
    batches are then ``[batch_size, len(reads), d]`` (all reads must have the same width).
    ``texts``: an iterable of strings, a ``datasets.Dataset`` (``column`` names the text
    column), or ``None`` for the embedded corpus. ``max_tokens`` stops the stream after that
    many tokens (rounded down to whole batches). ``texts_per_forward`` texts share one trace.
    """

    def __init__(
        self,
        model: Model,
        site: str | None = "resid_post",
        layer: int | None = 0,
        texts: Any = None,
        *,
        reads: list[tuple[str, int]] | None = None,
        column: str = "text",
        batch_size: int = 1024,
        buffer_tokens: int = 16384,
        texts_per_forward: int = 64,
        max_tokens: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ):
        if reads is None:
            if site is None or layer is None:
                raise ValueError("give site and layer, or reads=[(site, layer), ...]")
            reads = [(site, layer)]
        if not reads:
            raise ValueError("reads is empty; give at least one (site, layer)")
        for s, lay in reads:
            model.check_site(s, lay)
            if s not in STORE_SITES:
                raise ValueError(f"site {s!r} has no single vector per token; an ActivationStore reads one of {', '.join(STORE_SITES)}")
        widths = {model.site_width(s) for s, _ in reads}
        if len(widths) != 1:
            raise ValueError(f"reads {reads} have different widths {sorted(widths)}; read sites of one width together")
        if batch_size < 1 or texts_per_forward < 1:
            raise ValueError("batch_size and texts_per_forward must be positive")
        if buffer_tokens < batch_size + model.n_ctx:
            raise ValueError(
                f"buffer_tokens={buffer_tokens} is too small: it must hold at least batch_size + one "
                f"full context ({batch_size} + {model.n_ctx} = {batch_size + model.n_ctx})"
            )
        texts = corpus_texts() if texts is None else texts
        _check_source(texts, column)
        self.model = model
        self.reads = list(reads)
        self.source = texts
        self.column = column
        self.batch_size = batch_size
        self.buffer_tokens = buffer_tokens
        self.texts_per_forward = texts_per_forward
        self.max_tokens = max_tokens
        self.progress = progress
        self.d = widths.pop()
        shape = (buffer_tokens, self.d) if len(reads) == 1 else (buffer_tokens, len(reads), self.d)
        # the one allocation of the buffer: everything the store holds lives here
        self.buffer = torch.empty(shape, dtype=torch.float32)
        self.peak_tokens = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._state = StoreState(0, 0, 0, self._gen.get_state(), self.buffer[:0].clone())
        self._pending: str | None = None

    # -- checkpointing --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        s = self._state
        return {
            "texts_read": s.texts_read,
            "batches_done": s.batches_done,
            "tokens_yielded": s.tokens_yielded,
            "rng_state": s.rng_state.clone(),
            "carry": s.carry.clone(),
            "reads": list(self.reads),
            "batch_size": self.batch_size,
            "buffer_tokens": self.buffer_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` left off (pass the same source to the constructor)."""
        for key in ("reads", "batch_size", "buffer_tokens"):
            mine = list(self.reads) if key == "reads" else getattr(self, key)
            theirs = [tuple(r) for r in state[key]] if key == "reads" else state[key]
            if mine != theirs:
                raise ValueError(f"checkpoint has {key}={theirs} but this store has {mine}; build the store with the same settings")
        self._state = StoreState(
            int(state["texts_read"]), int(state["batches_done"]), int(state["tokens_yielded"]),
            state["rng_state"].clone(), state["carry"].clone(),
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, weights_only=False))

    # -- streaming ------------------------------------------------------------------------

    @property
    def tokens_yielded(self) -> int:
        return self._state.tokens_yielded

    def _fill(self, texts: Iterator[str], carry: torch.Tensor) -> tuple[int, int]:
        """Fill the buffer after ``carry``; return (tokens in buffer, texts read)."""
        n = carry.shape[0]
        self.buffer[:n] = carry
        read = 0
        batch: list[list[int]] = []
        lens: list[int] = []

        def flush() -> None:
            nonlocal n
            if not batch:
                return
            ids, mask, keep = pad_rows(self.model, batch)
            values = _batch_reads(self.model, ids, mask, self.reads)
            v = values[0][keep] if len(values) == 1 else torch.stack([x[keep] for x in values], dim=1)
            self.buffer[n : n + v.shape[0]] = v
            n += v.shape[0]
            batch.clear()
            lens.clear()

        while True:
            if self._pending is not None:
                text, self._pending = self._pending, None
            else:
                text = next(texts, None)
                if text is None:
                    break
            if not isinstance(text, str):
                raise ValueError(f"the text source gave a {type(text).__name__}, not a str")
            if text == "":
                read += 1
                continue
            row = self.model.tokenizer(text)["input_ids"][: self.model.n_ctx]
            k = len(row)
            if n + sum(lens) + k > self.buffer_tokens:
                self._pending = text  # it is read again by the next fill
                break
            batch.append(row)
            lens.append(k)
            read += 1
            if len(batch) >= self.texts_per_forward:
                flush()
        flush()
        self.peak_tokens = max(self.peak_tokens, n)
        return n, read

    def __iter__(self) -> Iterator[torch.Tensor]:
        st = self._state
        self._pending = None
        texts = _iter_source(self.source, self.column, st.texts_read)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_tokens, initial=st.tokens_yielded, desc=f"activations {self.reads[0][0]} L{self.reads[0][1]}", unit="tok", leave=False)
        try:
            while True:
                self._gen.set_state(st.rng_state)
                n, read = self._fill(texts, st.carry)
                if n < self.batch_size:
                    return  # the source is exhausted (the last partial batch is dropped)
                perm = torch.randperm(n, generator=self._gen)
                n_batches = n // self.batch_size
                for b in range(st.batches_done, n_batches):
                    if self.max_tokens is not None and st.tokens_yielded + self.batch_size > self.max_tokens:
                        return
                    batch = self.buffer[perm[b * self.batch_size : (b + 1) * self.batch_size]]
                    st.batches_done = b + 1
                    st.tokens_yielded += self.batch_size
                    if bar is not None:
                        bar.update(self.batch_size)
                    yield batch
                # next fill: its start point is the checkpoint
                st.carry = self.buffer[perm[n_batches * self.batch_size : n]].clone()
                st.texts_read += read
                st.batches_done = 0
                st.rng_state = self._gen.get_state()
        finally:
            if bar is not None:
                bar.close()
