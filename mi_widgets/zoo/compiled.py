"""Compiled zoo models: GPT-2 checkpoints whose weights are set by hand, so their circuits are known.

``python -m mi_widgets.zoo.compiled`` rebuilds ``models/induction``, ``models/ioi`` and
``models/ioi_backup`` and ``models/illusion`` (weights,
tokenizer, ``ground_truth.json``); the weights are a pure function of this file, so a rebuild gives
byte-identical ``model.safetensors``. ``python -m mi_widgets.zoo.compiled --measure induction``
(or ``ioi``) re-measures the figures recorded in a shipped model's ``ground_truth.json``.

Nothing is trained. Every checkpoint is an ordinary ``transformers.GPT2LMHeadModel`` (eager
attention, LayerNorm, GELU MLP, untied ``lm_head``); the construction only chooses its numbers.

How the residual stream is laid out
-----------------------------------
The residual stream is cut into named blocks of dimensions (``Layout``); each block has one job
(token identity, position code, the previous token's identity, the answer, ...). Token and
position embeddings write their blocks; each planted head reads some blocks and writes one block;
``lm_head`` reads only the answer block. Two devices make LayerNorm harmless:

* a ``ref`` dimension that nothing ever writes (it is always 0): every read vector (a column of
  ``W_Q``/``W_K``/``W_V``, a row of ``lm_head``) gets ``-sum(its other entries)`` in the ``ref``
  row, so it sums to zero and LayerNorm's mean subtraction cancels out of every read exactly;
* a constant ``anchor`` component, the same in every token embedding, and embeddings of constant
  norm and constant sum at every (token, position) (position codes are unit vectors in a sum-zero
  basis, every token has exactly one ``+1`` in its identity block and one in its kind flag): so at
  layer 0 LayerNorm divides every position by exactly the same number, and at later layers by
  nearly the same one (planted heads write unit vectors; decoys write small ones). ``_ln_scale``
  computes that number from a nominal residual vector and the read weights are divided by it.

All LayerNorm weights are 1 and biases 0; all MLP weights and biases are 0 (the MLPs output 0).

Position codes are 16 sinusoid pairs at hand-picked frequencies ``FREQS`` whose kernel
``D(d) = mean_k cos(FREQS[k] * d)`` is 1 at ``d = 0`` and within +-0.32 for every other offset
``|d| < 128``: a query ``R @ code(i)`` (``R`` rotates every pair back by one step) then scores the
key ``code(i - 1)`` highest, which is how a previous-token head finds ``i - 1`` (and, unrotated, how
a head finds itself).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).parent / "models"
EOT = "<|endoftext|>"
UNK = "<|unk|>"

N_POSITIONS = 128
N_EMBD = 256
N_HEAD = 4
# The MLPs are zero (no job in these circuits); a narrow width keeps the checkpoints small.
D_MLP = 16
D_HEAD = N_EMBD // N_HEAD
LN_EPS = 1e-5
ANCHOR = 10.0  # the constant component of every token embedding

# 16 frequencies (radians per position) chosen by a seeded search so that the position kernel
# mean_k cos(FREQS[k] * d) stays within +-0.32 for 1 <= |d| < 128 (checked in _pos_kernel_sidelobe).
FREQS = np.array(
    [0.2635, 0.4756, 0.5528, 0.7709, 0.9102, 0.9500, 1.1113, 1.1628,
     1.4236, 2.2049, 2.2417, 2.2759, 2.3558, 2.7268, 2.9549, 3.0719]
)  # fmt: skip
N_FREQ = len(FREQS)
POS_BLOCK = 2 * N_FREQ + 2  # cos/sin pairs + a position-0 marker, in a sum-zero basis

INDUCTION_WORDS = (
    "apple river stone cloud table garden window yellow rabbit silver candle forest "
    "pencil ocean basket mirror castle winter honey ladder orange planet violin bridge "
    "carpet dragon feather harbor island jacket kettle lemon marble needle onion parrot "
    "quilt rocket saddle tiger tunnel velvet wagon zebra anchor button cactus desert "
    "engine falcon guitar helmet iron jungle kitten lantern meadow napkin oyster pepper "
    "puzzle sugar"
).split()
assert len(INDUCTION_WORDS) == 62 and len(set(INDUCTION_WORDS)) == 62

IOI_NAMES = (
    "Mary John Alice Bob Sarah James Emma David Laura Michael Anna Thomas Kate Paul Lisa "
    "Mark Julia Peter Grace Daniel Rose Henry Clara Victor Nora Oscar Ruth Simon Helen Frank"
).split()
assert len(IOI_NAMES) == 30 and len(set(IOI_NAMES)) == 30

# {A} {B}: the two names of the first clause (ABBA: A = IO, B = S; BABA: A = S, B = IO);
# {S}: the subject again. The prompt ends right before the IO name. Templates differ in length and
# in where the names sit, so no fixed position carries the answer.
IOI_TEMPLATES = (
    "When {A} and {B} went to the store, {S} gave a drink to",
    "Then, {A} and {B} had a long argument. Afterwards {S} said to",
    "After the lunch, {A} and {B} went to the garden. {S} gave a ring to",
    "While {A} and {B} were working at the office, {S} decided to give a kiss to",
    "Friends {A} and {B} found a bone at the beach. {S} threw it to",
    "The day {A} and {B} arrived, {S} sent a letter to",
    "In the morning, {A} and {B} walked to the school, and then {S} passed a note to",
    "Later {A} met {B} at the park, and {S} gave a flower to",
    "Yesterday, after a very long and tiring day at work, {A} and {B} went to the station. "
    "{S} gave a ticket to",
    "When {A} went to the house with {B}, {S} handed the keys to",
)

# Which head does what (``"layer.head"``).
INDUCTION_HEADS = {
    "previous_token": "0.1",
    "induction": "1.2",
    "decoys": {
        "0.0": "attends to BOS; writes nothing (W_V = W_O = 0)",
        "0.2": "uniform attention; writes a random projection of the token into the unused decoy block",
        "0.3": "attends to its own position; writes a random projection of the token into the decoy block",
        "1.0": "attends to its own position; writes a random projection of the token into the decoy block",
        "1.1": "attends to BOS; writes a constant into the decoy block",
        "1.3": "uniform attention; writes a random projection of the token into the decoy block",
    },
}
IOI_HEADS = {
    "duplicate_token": "0.1",
    "s_inhibition": "1.2",
    "name_mover": "2.3",
    "decoys": {
        "0.0": "attends to BOS; writes nothing (W_V = W_O = 0)",
        "0.2": "attends to its own position; writes a random projection of the token into the decoy block",
        "0.3": "uniform attention; writes a random projection of the token into the decoy block",
        "1.0": "uniform attention; writes a random projection of the token into the decoy block",
        "1.1": "attends to BOS; writes a constant into the decoy block",
        "1.3": "attends to its own position; writes a random projection of the token into the decoy block",
        "2.0": "attends to BOS; writes a constant into the decoy block",
        "2.1": "attends to its own position; writes a random projection of the token into the decoy block",
        "2.2": "uniform attention; writes a random projection of the token into the decoy block",
    },
}

# Score scales (pre-softmax logits a head assigns, after its 1/sqrt(d_head)).
PREV_GAMMA = 25.0  # previous-token / self heads: gamma * kernel; the runner-up is <= 0.32 * gamma
IND_MATCH, IND_BOS = 30.0, 15.0  # induction head: matching key vs BOS fallback
DUP_MATCH, DUP_SELF, DUP_BOS = 55.0, 40.0, 30.0  # duplicate-token head (see _build_ioi)
SIN_DUP, SIN_BOS = 30.0, 16.0  # S-inhibition head: flagged position vs BOS fallback
NM_NAME, NM_INHIB = 20.0, 30.0  # name mover: any name vs penalty for the inhibited name
BOS_DECOY = 20.0
DECOY_WRITE = 0.3  # norm of what a decoy writes into the decoy block
LOGIT_SCALE = 10.0  # logit of the copied token (others 0) when the mover/induction head is sharp
NON_ANSWER_LOGIT = -5.0  # logit of tokens that are never answers (BOS, unk, non-names)


# --------------------------------------------------------------------------------------------
# Residual-stream layout and weight builder
# --------------------------------------------------------------------------------------------


class Layout:
    """Named, contiguous blocks of residual dimensions (the rest of ``d_model`` stays 0)."""

    def __init__(self, d_model: int, blocks: list[tuple[str, int]]):
        self.d = d_model
        self.blocks: dict[str, tuple[int, int]] = {}
        at = 0
        for name, size in blocks:
            self.blocks[name] = (at, at + size)
            at += size
        if at > d_model:
            raise ValueError(f"layout needs {at} dims, d_model is {d_model}")
        self.used = at

    def sl(self, name: str) -> slice:
        a, b = self.blocks[name]
        return slice(a, b)

    def idx(self, name: str, i: int = 0) -> int:
        a, b = self.blocks[name]
        if not 0 <= i < b - a:
            raise IndexError(f"{name}[{i}] out of range")
        return a + i

    def as_json(self) -> dict:
        return {k: [a, b] for k, (a, b) in self.blocks.items()}


def _helmert(n: int) -> np.ndarray:
    """``n x (n-1)`` orthonormal columns, each summing to zero."""
    h = np.zeros((n, n - 1))
    for k in range(1, n):
        h[:k, k - 1] = 1.0
        h[k, k - 1] = -float(k)
        h[:, k - 1] /= math.sqrt(k * (k + 1))
    return h


_H = _helmert(POS_BLOCK)


def _cs(t: np.ndarray) -> np.ndarray:
    """Unit-norm sinusoid features ``[cos f0 t, sin f0 t, cos f1 t, ...] / sqrt(K)``: ``[T, 2K]``."""
    ang = np.outer(t, FREQS)
    out = np.empty((len(t), 2 * N_FREQ))
    out[:, 0::2] = np.cos(ang)
    out[:, 1::2] = np.sin(ang)
    return out / math.sqrt(N_FREQ)


def _pos_codes(n_pos: int, marker_at_0: bool) -> np.ndarray:
    """Position-block contents ``[n_pos, POS_BLOCK]``: unit norm, sum zero. With ``marker_at_0``
    position 0 holds a separate marker direction instead of its sinusoids (so nothing that matches
    sinusoids ever matches position 0)."""
    codes = _cs(np.arange(n_pos)) @ _H[:, : 2 * N_FREQ].T
    if marker_at_0:
        codes[0] = _H[:, 2 * N_FREQ]
    return codes


def _pos_read() -> np.ndarray:
    """``POS_BLOCK x 2K``: reads the sinusoid features back (times ``1/sqrt(K)``) from the block."""
    return _H[:, : 2 * N_FREQ]


def _rotate_back(steps: int) -> np.ndarray:
    """``2K x 2K``: maps the features of position ``t`` to those of position ``t - steps``."""
    r = np.zeros((2 * N_FREQ, 2 * N_FREQ))
    for k, f in enumerate(FREQS):
        c, s = math.cos(f * steps), math.sin(f * steps)
        r[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = [[c, s], [-s, c]]
    return r


def _pos_kernel_sidelobe(n_pos: int = N_POSITIONS) -> float:
    d = np.arange(1, n_pos)
    return float(np.abs(np.cos(np.outer(d, FREQS)).mean(1)).max())


def _ln_scale(x: np.ndarray) -> float:
    """What GPT-2's LayerNorm multiplies ``x - mean(x)`` by."""
    return 1.0 / math.sqrt(float(np.var(x)) + LN_EPS)


class _Weights:
    """The parameters of a GPT2LMHeadModel as float64 numpy arrays, filled head by head."""

    def __init__(self, layout: Layout, vocab_size: int, n_layer: int, decoy_seed: int):
        d = layout.d
        self.layout, self.V, self.n_layer = layout, vocab_size, n_layer
        self.wte = np.zeros((vocab_size, d))
        self.wpe = np.zeros((N_POSITIONS, d))
        self.c_attn_w = np.zeros((n_layer, d, 3 * d))
        self.c_attn_b = np.zeros((n_layer, 3 * d))
        self.c_proj_w = np.zeros((n_layer, d, d))
        self.lm_head = np.zeros((vocab_size, d))
        self.rng = np.random.default_rng(decoy_seed)

    # -- heads ---------------------------------------------------------------------------------

    def head(
        self, layer: int, head: int, *, q=None, k=None, v=None, o=None, qb=None, kb=None, vb=None
    ):
        """Set one head: ``q``/``k``/``v`` are ``d_model x d_head`` read matrices (on the LayerNorm
        output), ``qb``/``kb``/``vb`` their biases, ``o`` the ``d_head x d_model`` write matrix."""
        d, a = self.layout.d, head * D_HEAD
        for part, w, b in ((0, q, qb), (1, k, kb), (2, v, vb)):
            cols = slice(part * d + a, part * d + a + D_HEAD)
            if w is not None:
                self.c_attn_w[layer][:, cols] = w
            if b is not None:
                self.c_attn_b[layer][cols] = b
        if o is not None:
            self.c_proj_w[layer][a : a + D_HEAD, :] = o

    def zeros_read(self) -> np.ndarray:
        return np.zeros((self.layout.d, D_HEAD))

    def zeros_write(self) -> np.ndarray:
        return np.zeros((D_HEAD, self.layout.d))

    def bos_head(self, layer: int, head: int, bos_dim: int, s: float, write_const: float | None):
        """Decoy: attends to BOS (key = BOS indicator); writes nothing, or a constant into the decoy block."""
        k = self.zeros_read()
        k[bos_dim, 0] = 1.0 / s
        qb = np.zeros(D_HEAD)
        qb[0] = BOS_DECOY * math.sqrt(D_HEAD)
        kwargs = {}
        if write_const is not None:
            vb = np.zeros(D_HEAD)
            vb[0] = 1.0
            o = self.zeros_write()
            direction = self.rng.normal(
                size=self.layout.blocks["decoy"][1] - self.layout.blocks["decoy"][0]
            )
            o[0, self.layout.sl("decoy")] = write_const * direction / np.linalg.norm(direction)
            kwargs = {"vb": vb, "o": o}
        self.head(layer, head, k=k, qb=qb, **kwargs)

    def _decoy_ov(self, tok_sl: slice, s: float) -> tuple[np.ndarray, np.ndarray]:
        """V: a fixed random projection of the token identity; O: into the decoy block, norm ~DECOY_WRITE."""
        n_tok = tok_sl.stop - tok_sl.start
        n_dec = self.layout.blocks["decoy"][1] - self.layout.blocks["decoy"][0]
        proj = self.rng.normal(size=(n_tok, n_dec))
        proj /= np.linalg.norm(proj, axis=1, keepdims=True)
        v = self.zeros_read()
        v[tok_sl, :n_dec] = proj / s
        o = self.zeros_write()
        o[:n_dec, self.layout.sl("decoy")] = DECOY_WRITE * np.eye(n_dec)
        return v, o

    def uniform_head(self, layer: int, head: int, tok_sl: slice, s: float):
        """Decoy: W_Q = W_K = 0, so it attends uniformly to every position so far."""
        v, o = self._decoy_ov(tok_sl, s)
        self.head(layer, head, v=v, o=o)

    def self_head(self, layer: int, head: int, tok_sl: slice, s: float):
        """Decoy: query and key are the position code (unrotated), so it attends to its own position."""
        q, k = self.zeros_read(), self.zeros_read()
        w = math.sqrt(PREV_GAMMA * math.sqrt(D_HEAD)) / s
        q[self.layout.sl("pos"), : 2 * N_FREQ] = _pos_read() * w
        k[self.layout.sl("pos"), : 2 * N_FREQ] = _pos_read() * w
        v, o = self._decoy_ov(tok_sl, s)
        self.head(layer, head, q=q, k=k, v=v, o=o)

    # -- finishing ----------------------------------------------------------------------------

    def finish(self) -> dict[str, np.ndarray]:
        """Apply the ``ref`` compensation to every read and return a GPT-2 state dict (float32)."""
        L = self.layout
        ref = L.idx("ref")
        assert not self.wte[:, ref].any() and not self.wpe[:, ref].any()
        assert not self.c_proj_w[:, :, ref].any(), "nothing may write the ref dimension"
        for layer in range(self.n_layer):
            w = self.c_attn_w[layer]
            assert not w[ref].any()
            w[ref] = -w.sum(axis=0)
        assert not self.lm_head[:, ref].any()
        self.lm_head[:, ref] = -self.lm_head.sum(axis=1)

        d, d_inner = L.d, D_MLP
        f32 = np.float32
        sd = {
            "transformer.wte.weight": self.wte,
            "transformer.wpe.weight": self.wpe,
            "transformer.ln_f.weight": np.ones(d),
            "transformer.ln_f.bias": np.zeros(d),
            "lm_head.weight": self.lm_head,
        }
        for layer in range(self.n_layer):
            p = f"transformer.h.{layer}."
            sd.update(
                {
                    p + "ln_1.weight": np.ones(d),
                    p + "ln_1.bias": np.zeros(d),
                    p + "attn.c_attn.weight": self.c_attn_w[layer],
                    p + "attn.c_attn.bias": self.c_attn_b[layer],
                    p + "attn.c_proj.weight": self.c_proj_w[layer],
                    p + "attn.c_proj.bias": np.zeros(d),
                    p + "ln_2.weight": np.ones(d),
                    p + "ln_2.bias": np.zeros(d),
                    p + "mlp.c_fc.weight": np.zeros((d, d_inner)),
                    p + "mlp.c_fc.bias": np.zeros(d_inner),
                    p + "mlp.c_proj.weight": np.zeros((d_inner, d)),
                    p + "mlp.c_proj.bias": np.zeros(d),
                }
            )
        return {k: np.ascontiguousarray(v, dtype=f32) for k, v in sd.items()}


def _layer0_scale(wts: _Weights) -> float:
    """LayerNorm scale at layer 0, asserting it is the same at every (token, position)."""
    emb = wts.wte[:, None, :] + wts.wpe[None, :, :]
    scales = 1.0 / np.sqrt(emb.var(axis=-1) + LN_EPS)
    assert np.ptp(scales) < 1e-9 * scales.max(), "embedding norms must be constant"
    return float(scales.flat[0])


# --------------------------------------------------------------------------------------------
# induction
# --------------------------------------------------------------------------------------------


def induction_vocab() -> list[str]:
    return [EOT, UNK] + [" " + w for w in INDUCTION_WORDS]


def _build_induction() -> tuple[dict[str, np.ndarray], Layout, list[str]]:
    vocab = induction_vocab()
    V = len(vocab)
    L = Layout(
        N_EMBD,
        [
            ("ref", 1),
            ("anchor", 1),
            ("tok", V),
            ("pos", POS_BLOCK),
            ("prev", V),
            ("answer", V),
            ("decoy", 8),
        ],
    )
    w = _Weights(L, V, n_layer=2, decoy_seed=1)
    tok, prev, ans, pos = L.sl("tok"), L.sl("prev"), L.sl("answer"), L.sl("pos")
    bos = L.idx("tok", 0)

    # Embeddings: anchor + one-hot token; unit position code (sum zero).
    w.wte[:, L.idx("anchor")] = ANCHOR
    w.wte[:, tok] = np.eye(V)
    w.wpe[:, pos] = _pos_codes(N_POSITIONS, marker_at_0=False)
    s0 = _layer0_scale(w)
    sq = math.sqrt(D_HEAD)

    # 0.1 previous-token head: q = R code(i) (= code(i-1)), k = code(j): score PREV_GAMMA * D(i-1-j).
    a = math.sqrt(PREV_GAMMA * sq) / s0  # features read back: s0 * cs, and cs(i).cs(j) = D(i-j)
    q, k = w.zeros_read(), w.zeros_read()
    q[pos, : 2 * N_FREQ] = _pos_read() @ _rotate_back(1).T * a
    k[pos, : 2 * N_FREQ] = _pos_read() * a
    v = w.zeros_read()
    v[tok, :V] = np.eye(V) / s0  # value = one-hot of the attended token
    o = w.zeros_write()
    o[:V, prev] = np.eye(V)  # -> the prev block: one-hot of the previous token
    w.head(0, 1, q=q, k=k, v=v, o=o)

    # Layer-0 decoys.
    w.bos_head(0, 0, bos, s0, write_const=None)
    w.uniform_head(0, 2, tok, s0)
    w.self_head(0, 3, tok, s0)

    # Nominal layer-1 residual: embedding + a one-hot in prev.
    x1 = w.wte[2] + w.wpe[5]
    x1[L.idx("prev", 3)] += 1.0
    s1 = _ln_scale(x1)

    # 1.2 induction head: query = current token (dims 1..V-1), key = prev block (dims 1..V-1),
    # plus dim 0: a query bias against the key's BOS indicator (fallback when nothing matches).
    q, k = w.zeros_read(), w.zeros_read()
    m = math.sqrt(IND_MATCH * sq) / s1
    q[tok, 1:V] = np.eye(V)[:, 1:] * m
    k[prev, 1:V] = np.eye(V)[:, 1:] * m
    k[bos, 0] = 1.0 / s1
    qb = np.zeros(D_HEAD)
    qb[0] = IND_BOS * sq
    v = w.zeros_read()
    v[tok, 1:V] = np.eye(V)[:, 1:] / s1  # BOS has value 0: the fallback writes nothing
    o = w.zeros_write()
    o[1:V, ans] = np.eye(V)[1:]
    w.head(1, 2, q=q, k=k, v=v, o=o, qb=qb)

    # Layer-1 decoys.
    w.self_head(1, 0, tok, s1)
    w.bos_head(1, 1, bos, s1, write_const=DECOY_WRITE)
    w.uniform_head(1, 3, tok, s1)

    # Unembedding: logit(t) = LOGIT_SCALE * answer[t]; BOS and unk get NON_ANSWER_LOGIT via the anchor.
    xf = x1.copy()
    xf[L.idx("answer", 3)] += 1.0
    sf = _ln_scale(xf)
    w.lm_head[:, ans] = np.eye(V) * LOGIT_SCALE / sf
    w.lm_head[:2, ans] = 0.0
    w.lm_head[:2, L.idx("anchor")] = NON_ANSWER_LOGIT / (ANCHOR * sf)
    return w.finish(), L, vocab


# --------------------------------------------------------------------------------------------
# IOI
# --------------------------------------------------------------------------------------------


def _byte_level_pieces(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    pt = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [p for p, _ in pt.pre_tokenize_str(text)]


def _decode_piece(piece: str) -> str:
    from tokenizers import decoders

    return decoders.ByteLevel().decode([piece])


def ioi_vocab() -> list[str]:
    """Specials, then the 30 names (each with its leading space), then the template words."""
    names = [" " + n for n in IOI_NAMES]
    words: list[str] = []
    for t in IOI_TEMPLATES:
        filled = t.format(A=IOI_NAMES[0], B=IOI_NAMES[1], S=IOI_NAMES[0])
        for p in _byte_level_pieces(filled):
            wd = _decode_piece(p)
            if wd not in names and wd not in words:
                words.append(wd)
    return [EOT, UNK] + names + words


class _IOI:
    """What ``ioi`` and ``ioi_backup`` share: the vocabulary, the layout (``extra`` blocks go
    before ``decoy``), the embeddings and the planted heads' reads and writes, as read at the
    LayerNorm scale ``s`` of their layer."""

    def __init__(self, n_layer: int, decoy_seed: int, extra: list[tuple[str, int]]):
        self.vocab = vocab = ioi_vocab()
        self.V, self.N = V, N = len(vocab), len(IOI_NAMES)
        self.L = L = Layout(
            N_EMBD,
            [
                ("ref", 1), ("anchor", 1), ("tok", V), ("is_name", 1), ("not_name", 1), ("pos", POS_BLOCK),
                ("dup", 1), ("inhib", N), ("answer", N), *extra, ("decoy", 8),
            ],
        )  # fmt: skip
        self.w = w = _Weights(L, V, n_layer=n_layer, decoy_seed=decoy_seed)
        self.tok, self.pos, self.inhib, self.ans = L.sl("tok"), L.sl("pos"), L.sl("inhib"), L.sl("answer")
        self.names = slice(L.idx("tok", 2), L.idx("tok", 2) + N)  # the names' rows of the tok block
        self.bos = L.idx("tok", 0)
        self.eyeN = np.eye(N)

        # Embeddings: anchor + one-hot token + exactly one of is_name / not_name; unit position
        # code, with position 0 (always BOS) on its own marker direction.
        w.wte[:, L.idx("anchor")] = ANCHOR
        w.wte[:, self.tok] = np.eye(V)
        w.wte[2 : 2 + N, L.idx("is_name")] = 1.0
        w.wte[[0, 1] + list(range(2 + N, V)), L.idx("not_name")] = 1.0
        w.wpe[:, self.pos] = _pos_codes(N_POSITIONS, marker_at_0=True)
        self.s0 = _layer0_scale(w)

    def duplicate_token(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head 0.1 (see ``_build_ioi``); its (q, k, qb)."""
        w, L, N, names, eyeN, s0, sq = self.w, self.L, self.N, self.names, self.eyeN, self.s0, math.sqrt(D_HEAD)
        q, k = w.zeros_read(), w.zeros_read()
        m = math.sqrt(DUP_MATCH * sq) / s0
        q[names, :N] = eyeN * m
        k[names, :N] = eyeN * m
        a = math.sqrt(DUP_SELF * sq) / s0
        q[self.pos, N : N + 2 * N_FREQ] = -_pos_read() * a
        k[self.pos, N : N + 2 * N_FREQ] = _pos_read() * a
        k[self.bos, N + 2 * N_FREQ] = 1.0 / s0
        qb = np.zeros(D_HEAD)
        qb[N + 2 * N_FREQ] = DUP_BOS * sq
        v = w.zeros_read()
        v[L.idx("is_name"), 0] = 1.0 / s0
        o = w.zeros_write()
        o[0, L.idx("dup")] = 1.0
        w.head(0, 1, q=q, k=k, v=v, o=o, qb=qb)
        return q, k, qb

    def s_inhibition(self, s1: float) -> tuple[np.ndarray, np.ndarray]:
        """Head 1.2 (see ``_build_ioi``); its (k, qb)."""
        w, N, sq = self.w, self.N, math.sqrt(D_HEAD)
        k = w.zeros_read()
        k[self.L.idx("dup"), 0] = 1.0 / s1
        k[self.bos, 1] = 1.0 / s1
        qb = np.zeros(D_HEAD)
        qb[0], qb[1] = SIN_DUP * sq, SIN_BOS * sq
        v = w.zeros_read()
        v[self.names, :N] = self.eyeN / s1
        o = w.zeros_write()
        o[:N, self.inhib] = self.eyeN
        w.head(1, 2, k=k, v=v, o=o, qb=qb)
        return k, qb

    def name_mover_qk(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The name mover's (q, k, qb) read at scale ``s``: NM_NAME * is_name(j) - NM_INHIB *
        <inhib(i), name(j)>; column ``1 + N`` is left free."""
        w, N, eyeN, sq = self.w, self.N, self.eyeN, math.sqrt(D_HEAD)
        q, k = w.zeros_read(), w.zeros_read()
        k[self.L.idx("is_name"), 0] = 1.0 / s
        qb = np.zeros(D_HEAD)
        qb[0] = NM_NAME * sq
        m = math.sqrt(NM_INHIB * sq) / s
        q[self.inhib, 1 : 1 + N] = -eyeN * m
        k[self.names, 1 : 1 + N] = eyeN * m
        return q, k, qb

    def copy_name(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """(v, o) that copy the attended name (read at scale ``s``) into the answer block."""
        v = self.w.zeros_read()
        v[self.names, : self.N] = self.eyeN / s
        o = self.w.zeros_write()
        o[: self.N, self.ans] = self.eyeN
        return v, o

    def finish(self, xf: np.ndarray) -> tuple[dict[str, np.ndarray], Layout, list[str]]:
        """Unembedding at the final scale of ``xf``: logit LOGIT_SCALE for the name in the answer
        block, NON_ANSWER_LOGIT for non-names via the anchor."""
        w, N, V, L = self.w, self.N, self.V, self.L
        sf = _ln_scale(xf)
        w.lm_head[2 : 2 + N, self.ans] = self.eyeN * LOGIT_SCALE / sf
        non_names = [0, 1] + list(range(2 + N, V))
        w.lm_head[non_names, L.idx("anchor")] = NON_ANSWER_LOGIT / (ANCHOR * sf)
        return w.finish(), L, self.vocab


def _build_ioi() -> tuple[dict[str, np.ndarray], Layout, list[str]]:
    c = _IOI(n_layer=3, decoy_seed=2, extra=[])
    w, L, tok, bos, s0 = c.w, c.L, c.tok, c.bos, c.s0

    # 0.1 duplicate-token head. Scores: DUP_MATCH * [same name] - DUP_SELF * D(i-j) + DUP_BOS * [j = BOS].
    # An earlier occurrence of the same name scores >= 55 - 0.32*40 = 42.2; BOS 30; any other
    # position <= 0.32*40 = 12.8; itself 55 - 40 = 15. So a repeated name attends to its first
    # occurrence and anything else attends to BOS. Value = is_name (0 at BOS): it writes a
    # "duplicate" flag of 1 exactly where the token is a name seen before.
    c.duplicate_token()

    w.bos_head(0, 0, bos, s0, write_const=None)
    w.self_head(0, 2, tok, s0)
    w.uniform_head(0, 3, tok, s0)

    x1 = w.wte[5] + w.wpe[9]  # nominal residual (a name's; the dup flag moves it by < 1%)
    s1 = _ln_scale(x1)

    # 1.2 S-inhibition head: constant query; key = the duplicate flag (SIN_DUP) or BOS (SIN_BOS).
    # From the second occurrence of S onwards it attends to that position and writes S's identity
    # into the inhib block (before it, it attends to BOS, whose value is 0).
    c.s_inhibition(s1)

    w.uniform_head(1, 0, tok, s1)
    w.bos_head(1, 1, bos, s1, write_const=DECOY_WRITE)
    w.self_head(1, 3, tok, s1)

    x2 = x1.copy()
    x2[L.idx("inhib", 1)] += 1.0
    s2 = _ln_scale(x2)

    # 2.3 name mover: score NM_NAME * is_name(j) - NM_INHIB * <inhib(i), name(j)>: every name
    # scores 20 except the inhibited one (-10); non-names 0. It copies the attended name into the
    # answer block, which lm_head reads.
    q, k, qb = c.name_mover_qk(s2)
    v, o = c.copy_name(s2)
    w.head(2, 3, q=q, k=k, v=v, o=o, qb=qb)

    w.bos_head(2, 0, bos, s2, write_const=DECOY_WRITE)
    w.self_head(2, 1, tok, s2)
    w.uniform_head(2, 2, tok, s2)

    xf = x2.copy()
    xf[L.idx("answer", 1)] += 1.0
    return c.finish(xf)


# --------------------------------------------------------------------------------------------
# IOI with backup heads, a suppression head and attention decoys (``ioi_backup``)
# --------------------------------------------------------------------------------------------

IOI_BACKUP_HEADS = {
    "duplicate_token": "0.1",
    "s_inhibition": "1.2",
    "name_mover": "2.3",
    "suppression": "2.1",
    "backup_name_mover": "3.0",
    "attention_decoys": {
        "0.2": "duplicate-token pattern (same query/key as 0.1, a little sharper); writes into the unread decoy block",
        "0.3": "previous-token pattern (attends i -> i-1); writes into the unread decoy block",
        "1.3": "S-inhibition pattern (same query/key as 1.2, a little sharper); writes into the unread decoy block",
        "2.0": "name-mover pattern (same query/key as 2.3, a little sharper: END -> IO); writes into the unread decoy block",
    },
    "decoys": {
        "0.0": "attends to BOS; writes nothing (W_V = W_O = 0)",
        "1.0": "uniform attention; writes a random projection of the token into the decoy block",
        "1.1": "attends to BOS; writes a constant into the decoy block",
        "2.2": "attends to its own position; writes a random projection of the token into the decoy block",
        "3.1": "attends to BOS; writes a constant into the decoy block",
        "3.2": "attends to its own position; writes a random projection of the token into the decoy block",
        "3.3": "uniform attention; writes a random projection of the token into the decoy block",
    },
}
SUPPRESS = 0.3  # the suppression head writes -SUPPRESS x the name it attends to (IO) into answer
BACKUP_GATE = 60.0  # backup mover's score on BOS per unit of the 'moved' flag (names score 20)
DECOY_SHARPEN = 1.25  # attention decoys scale the planted head's scores by this (>= its pattern)
PREV_DECOY_BOS = 12.0  # previous-token decoy: BOS fallback score (position 1 has no sinusoid at 0)


def _build_ioi_backup() -> tuple[dict[str, np.ndarray], Layout, list[str]]:
    """The ``ioi`` circuit plus self-repair, suppression and look-alike decoys (4 layers x 4 heads).

    * 2.3 (name mover) also writes a ``moved`` flag = its attention on names (1 at END);
    * 3.0 (backup name mover) has 2.3's query/key plus a BOS score of ``BACKUP_GATE * moved``:
      while 2.3 works it attends to BOS (value 0) and writes nothing; when 2.3 writes nothing
      (zero-ablation) it attends to IO and writes IO into ``answer`` exactly as 2.3 did;
    * 2.1 (suppression) has 2.3's query/key and writes ``-SUPPRESS`` x IO into ``answer``;
    * 0.2, 0.3, 1.3, 2.0 copy a planted attention pattern (or a previous-token one) and write into
      the unread ``decoy`` block.
    """
    c = _IOI(n_layer=4, decoy_seed=3, extra=[("moved", 1)])
    w, L, tok, pos, bos, s0, N = c.w, c.L, c.tok, c.pos, c.bos, c.s0, c.N
    sq = math.sqrt(D_HEAD)
    sh = math.sqrt(DECOY_SHARPEN)  # q and k both scaled: scores x DECOY_SHARPEN

    # 0.1 duplicate-token head (as in ioi).
    q, k, qb = c.duplicate_token()
    # 0.2 duplicate-token decoy: the same scores x DECOY_SHARPEN, written where nothing reads.
    dv, do = w._decoy_ov(tok, s0)
    w.head(0, 2, q=q * sh, k=k * sh, qb=qb * sh, v=dv, o=do)
    # 0.3 previous-token decoy: q = R code(i), k = code(j), plus a BOS fallback.
    a = math.sqrt(PREV_GAMMA * sq) / s0
    q, k = w.zeros_read(), w.zeros_read()
    q[pos, : 2 * N_FREQ] = _pos_read() @ _rotate_back(1).T * a
    k[pos, : 2 * N_FREQ] = _pos_read() * a
    k[bos, 2 * N_FREQ] = 1.0 / s0
    qb = np.zeros(D_HEAD)
    qb[2 * N_FREQ] = PREV_DECOY_BOS * sq
    dv, do = w._decoy_ov(tok, s0)
    w.head(0, 3, q=q, k=k, qb=qb, v=dv, o=do)
    w.bos_head(0, 0, bos, s0, write_const=None)

    x1 = w.wte[5] + w.wpe[9]
    s1 = _ln_scale(x1)

    # 1.2 S-inhibition head (as in ioi); 1.3 its look-alike.
    k, qb = c.s_inhibition(s1)
    dv, do = w._decoy_ov(tok, s1)
    w.head(1, 3, k=k * DECOY_SHARPEN, qb=qb, v=dv, o=do)
    w.uniform_head(1, 0, tok, s1)
    w.bos_head(1, 1, bos, s1, write_const=DECOY_WRITE)

    x2 = x1.copy()
    x2[L.idx("inhib", 1)] += 1.0
    s2 = _ln_scale(x2)

    # 2.3 name mover (as in ioi) that also writes the 'moved' flag; 2.1 suppression (same
    # query/key, writes -SUPPRESS x the name); 2.0 its look-alike decoy.
    q, k, qb = c.name_mover_qk(s2)
    v, o = c.copy_name(s2)
    v[L.idx("is_name"), N] = 1.0 / s2
    o[N, L.idx("moved")] = 1.0
    w.head(2, 3, q=q, k=k, v=v, o=o, qb=qb)
    o_s = w.zeros_write()
    o_s[:N, c.ans] = -SUPPRESS * c.eyeN
    w.head(2, 1, q=q, k=k, v=v, o=o_s, qb=qb)
    dv, do = w._decoy_ov(tok, s2)
    w.head(2, 0, q=q * sh, k=k * sh, qb=qb * sh, v=dv, o=do)
    w.self_head(2, 2, tok, s2)

    x3 = x2.copy()
    x3[L.idx("answer", 1)] += 1.0 - SUPPRESS
    x3[L.idx("moved")] += 1.0
    s3 = _ln_scale(x3)

    # 3.0 backup name mover: 2.3's scores (re-read at this layer's scale) plus BACKUP_GATE * moved
    # on the BOS key, so it only attends to names (and copies IO) when 2.3 wrote no flag.
    q, k, qb = c.name_mover_qk(s3)
    g = math.sqrt(BACKUP_GATE * sq) / s3
    q[L.idx("moved"), 1 + N] = g
    k[bos, 1 + N] = g
    v, o = c.copy_name(s3)
    w.head(3, 0, q=q, k=k, v=v, o=o, qb=qb)
    w.bos_head(3, 1, bos, s3, write_const=DECOY_WRITE)
    w.self_head(3, 2, tok, s3)
    w.uniform_head(3, 3, tok, s3)

    return c.finish(x3.copy())


# --------------------------------------------------------------------------------------------
# An interpretability illusion (``illusion``; Makelov et al. 2023)
# --------------------------------------------------------------------------------------------

ILLUSION_ANSWERS = (" apple", " river")  # the answer for class A, for class B
ILLUSION_HEADS = {
    "mechanism": "0.1",
    "disconnected": "0.2",
    "dormant": "1.0",
    "decoys": {
        "0.0": "attends to BOS; writes nothing (W_V = W_O = 0)",
        "0.3": "uniform attention; writes a random projection of the token into the decoy block",
        "1.1": "attends to BOS; writes a constant into the decoy block",
        "1.2": "attends to its own position; writes a random projection of the token into the decoy block",
        "1.3": "uniform attention; writes a random projection of the token into the decoy block",
    },
}
ILLUSION_FIRST = 25.0  # score of position 1 for the heads that read the first word
ILLUSION_DORMANT_GAIN = (
    3.0  # what head 1.0 adds to cls_first[A] (and subtracts from B) per unit of 'dormant'
)


def illusion_classes() -> tuple[list[str], list[str]]:
    """The words of class A and class B (the answer words belong to neither)."""
    words = [" " + w for w in INDUCTION_WORDS if " " + w not in ILLUSION_ANSWERS]
    return words[:30], words[30:]


def _build_illusion() -> tuple[dict[str, np.ndarray], Layout, list[str]]:
    """The answer is " apple" when the first word is of class A, " river" for class B.

    * 0.1 (mechanism) attends to position 1 and copies the first word's class (one-hot ``cls``)
      into ``cls_first``, which ``lm_head`` reads;
    * 0.2 (disconnected) attends to position 1 too and writes the class as a sign (+1 A, -1 B)
      into ``shadow``, which nothing reads;
    * 1.0 (dormant pathway) attends to its own position and moves ``dormant`` (never written, so
      always 0) into ``cls_first`` (+3 for A, -3 for B per unit).

    The direction ``u = (e_shadow + e_dormant) / sqrt(2)`` in the input of block 1 separates the
    classes (through ``shadow``) and, patched from a source run into a base run, moves ``dormant``
    by 1/sqrt(2) and so flips the answer through 1.0: an interchange intervention calls it causal
    although neither of its parts is the mechanism (``cls_first`` is).
    """
    vocab = induction_vocab()
    V = len(vocab)
    cls_a, cls_b = illusion_classes()
    L = Layout(
        N_EMBD,
        [("ref", 1), ("anchor", 1), ("tok", V), ("cls", 2), ("pos", POS_BLOCK),
         ("cls_first", 2), ("shadow", 1), ("dormant", 1), ("decoy", 8)],
    )  # fmt: skip
    w = _Weights(L, V, n_layer=2, decoy_seed=4)
    tok, pos = L.sl("tok"), L.sl("pos")
    bos = L.idx("tok", 0)
    sq = math.sqrt(D_HEAD)
    ia = [vocab.index(x) for x in cls_a]
    ib = [vocab.index(x) for x in cls_b]
    rest = [i for i in range(V) if i not in ia and i not in ib]

    w.wte[:, L.idx("anchor")] = ANCHOR
    w.wte[:, tok] = np.eye(V)
    w.wte[ia, L.idx("cls", 0)] = 1.0
    w.wte[ib, L.idx("cls", 1)] = 1.0
    # specials and the answer words: half of each (same sum; their norm differs slightly, which
    # is harmless: heads read the class only at position 1, always a class word)
    w.wte[rest, L.idx("cls", 0)] = 0.5
    w.wte[rest, L.idx("cls", 1)] = 0.5
    w.wpe[:, pos] = _pos_codes(N_POSITIONS, marker_at_0=True)
    emb = w.wte[:, None, :] + w.wpe[None, :, :]
    s0 = 1.0 / math.sqrt(float(emb[ia[0], 3].var()) + LN_EPS)  # words (not specials) matter here

    # 0.1 and 0.2: constant query = the code of position 1 (query bias), key = position code.
    first = _cs(np.array([1.0]))[0]  # features of position 1
    k = w.zeros_read()
    k[pos, : 2 * N_FREQ] = _pos_read() / s0
    qb = np.zeros(D_HEAD)
    qb[: 2 * N_FREQ] = first * ILLUSION_FIRST * sq
    v = w.zeros_read()
    v[L.sl("cls"), :2] = np.eye(2) / s0
    o = w.zeros_write()
    o[:2, L.sl("cls_first")] = np.eye(2)
    w.head(0, 1, k=k, qb=qb, v=v, o=o)
    v2 = w.zeros_read()
    v2[L.idx("cls", 0), 0] = 1.0 / s0
    v2[L.idx("cls", 1), 0] = -1.0 / s0
    o2 = w.zeros_write()
    o2[0, L.idx("shadow")] = 1.0
    w.head(0, 2, k=k, qb=qb, v=v2, o=o2)
    w.bos_head(0, 0, bos, s0, write_const=None)
    w.uniform_head(0, 3, tok, s0)

    x1 = emb[ia[0], 3].copy()
    x1[L.idx("cls_first", 0)] += 1.0
    x1[L.idx("shadow")] += 1.0
    s1 = _ln_scale(x1)

    # 1.0 dormant pathway: attends to itself, moves 'dormant' into cls_first.
    q, k = w.zeros_read(), w.zeros_read()
    a = math.sqrt(PREV_GAMMA * sq) / s1
    q[pos, : 2 * N_FREQ] = _pos_read() * a
    k[pos, : 2 * N_FREQ] = _pos_read() * a
    v = w.zeros_read()
    v[L.idx("dormant"), 0] = 1.0 / s1
    o = w.zeros_write()
    o[0, L.idx("cls_first", 0)] = ILLUSION_DORMANT_GAIN
    o[0, L.idx("cls_first", 1)] = -ILLUSION_DORMANT_GAIN
    w.head(1, 0, q=q, k=k, v=v, o=o)
    w.bos_head(1, 1, bos, s1, write_const=DECOY_WRITE)
    w.self_head(1, 2, tok, s1)
    w.uniform_head(1, 3, tok, s1)

    sf = _ln_scale(x1)
    for c, ans in enumerate(ILLUSION_ANSWERS):
        w.lm_head[vocab.index(ans), L.idx("cls_first", c)] = LOGIT_SCALE / sf
    others = [i for i in range(V) if vocab[i] not in ILLUSION_ANSWERS]
    w.lm_head[others, L.idx("anchor")] = NON_ANSWER_LOGIT / (ANCHOR * sf)
    return w.finish(), L, vocab


def illusion_prompts(n: int = 200, seed: int = 0, length: int = 6) -> list[dict]:
    """``n`` texts of ``length`` distinct words of class A or B (the first word's class alternates:
    label 1 = A, answer " apple"; label 0 = B, answer " river")."""
    rng = np.random.default_rng(seed)
    cls_a, cls_b = illusion_classes()
    pool = cls_a + cls_b
    out = []
    for i in range(n):
        label = 1 - i % 2
        first = (cls_a if label else cls_b)[rng.integers(len(cls_a))]
        others = [x for x in pool if x != first]
        rest = [others[j] for j in rng.choice(len(others), size=length - 1, replace=False)]
        out.append({"text": "".join([first] + rest), "label": label,
                    "answer": ILLUSION_ANSWERS[1 - label]})  # fmt: skip
    return out


def illusion_directions(d_model: int = N_EMBD) -> dict[str, np.ndarray]:
    """Unit directions in the input of block 1 of ``illusion``: ``true`` (cls_first A - B),
    ``shadow``, ``dormant`` and the illusory ``u = (shadow + dormant) / sqrt(2)``."""
    L = layout("illusion")
    e = np.eye(d_model)
    true = (e[L.idx("cls_first", 0)] - e[L.idx("cls_first", 1)]) / math.sqrt(2)
    sh, dm = e[L.idx("shadow")], e[L.idx("dormant")]
    return {"true": true, "shadow": sh, "dormant": dm, "u": (sh + dm) / math.sqrt(2)}


def measure_illusion(model, tokenizer, n: int = 200, seed: int = 0) -> dict:
    """Accuracy, and interchange accuracy along each of ``illusion_directions`` at the input of
    block 1, last position: base and source have different labels; the edit is
    ``h_b + ((h_s - h_b) . d) d``; success = the model gives the source's answer."""
    import torch

    prompts = illusion_prompts(n, seed)
    ids = torch.tensor([tokenizer(p["text"])["input_ids"] for p in prompts])
    ans = torch.tensor(
        [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(p["answer"]))[0] for p in prompts]
    )
    a_id, b_id = (
        tokenizer.convert_tokens_to_ids(tokenizer.tokenize(x))[0] for x in ILLUSION_ANSWERS
    )
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    acc = (out.logits[:, -1].argmax(-1) == ans).float().mean().item()
    h1 = out.hidden_states[1][:, -1]  # input of block 1 at the last position
    src = torch.arange(n) ^ 1  # neighbours have opposite labels
    res = {"prompts": {"generator": "illusion_prompts", "n": n, "seed": seed}, "accuracy": _r(acc)}
    iia = {}
    for name, d in illusion_directions(model.config.n_embd).items():
        dv = torch.tensor(d, dtype=torch.float32)
        new = h1 + ((h1[src] - h1) @ dv)[:, None] * dv

        def pre(_m, args, kwargs, new=new):
            hs = args[0].clone()
            hs[:, -1] = new
            return (hs, *args[1:]), kwargs

        hk = model.transformer.h[1].register_forward_pre_hook(pre, with_kwargs=True)
        try:
            with torch.no_grad():
                lg = model(ids).logits[:, -1]
        finally:
            hk.remove()
        pred_a = lg[:, a_id] > lg[:, b_id]
        want_a = torch.tensor([prompts[j]["label"] == 1 for j in src.tolist()])
        iia[name] = _r((pred_a == want_a).float().mean())
    res["interchange_accuracy_block1_input"] = iia
    return res


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _make_tokenizer(vocab: list[str]):
    """Word-level tokenizer over byte-level pieces (GPT-2 style: " Mary" is stored as "ĠMary"),
    BOS prepended, unknown words -> <|unk|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.pre_tokenizers import ByteLevel

    bl = ByteLevel(add_prefix_space=False, use_regex=True)
    table = {}
    for i, wd in enumerate(vocab):
        if wd in (EOT, UNK):
            table[wd] = i
            continue
        pieces = [p for p, _ in bl.pre_tokenize_str(wd)]
        assert len(pieces) == 1, (wd, pieces)
        table[pieces[0]] = i
    tok = Tokenizer(models.WordLevel(table, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT, UNK])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, 0)]
    )
    return tok


def _config(vocab_size: int, n_layer: int):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_POSITIONS,
        n_embd=N_EMBD,
        n_layer=n_layer,
        n_head=N_HEAD,
        n_inner=D_MLP,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=LN_EPS,
        scale_attn_weights=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )


def _save(out: Path, sd: dict[str, np.ndarray], vocab: list[str], n_layer: int) -> None:
    import torch
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    cfg = _config(len(vocab), n_layer)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in sd.items()}, strict=False
    )
    missing = [
        m for m in missing if not m.endswith(".attn.bias") and not m.endswith(".attn.masked_bias")
    ]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    cpath = out / "config.json"
    c = json.loads(cpath.read_text(encoding="utf-8"))
    c["attn_implementation"] = "eager"
    c.pop("_attn_implementation_autoset", None)
    cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_make_tokenizer(vocab),
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=UNK,
        model_max_length=N_POSITIONS,
    )
    fast.save_pretrained(str(out))
    tpath = out / "tokenizer_config.json"
    t = json.loads(tpath.read_text(encoding="utf-8"))
    t["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 5 writes "TokenizersBackend"
    tpath.write_text(json.dumps(t, indent=2, sort_keys=True) + "\n", encoding="utf-8")


BUILDERS = {
    "induction": (_build_induction, 2),
    "ioi": (_build_ioi, 3),
    "ioi_backup": (_build_ioi_backup, 4),
    "illusion": (_build_illusion, 2),
}


def build(name: str, out: Path) -> Layout:
    """Write the weights, config and tokenizer of compiled model ``name`` into ``out``."""
    fn, n_layer = BUILDERS[name]
    assert _pos_kernel_sidelobe() < 0.32, "the position-code margins assume sidelobes < 0.32"
    sd, layout, vocab = fn()
    _save(Path(out), sd, vocab, n_layer)
    return layout


def layout(name: str) -> Layout:
    """The residual-stream layout of compiled model ``name`` (block name -> dims)."""
    return BUILDERS[name][0]()[1]


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


def induction_prompts(n: int = 200, seq_len: int = 30, seed: int = 0):
    """``[n, 1 + 2*seq_len]`` token ids: BOS, then ``seq_len`` distinct random words (no repeats
    inside a half, so the next token is determined), then the same words again."""
    import torch

    rng = np.random.default_rng(seed)
    words = np.arange(2, 2 + len(INDUCTION_WORDS))
    rows = []
    for _ in range(n):
        half = rng.choice(words, size=seq_len, replace=False)
        rows.append(np.concatenate([[0], half, half]))
    return torch.tensor(np.array(rows), dtype=torch.long)


def induction_texts(
    n: int = 20, seq_len: int = 12, seed: int = 0, cut: int | None = None
) -> tuple[list[str], list[str]]:
    """``n`` texts ``A + A`` (``A`` = ``seq_len`` distinct words of the induction vocabulary, seeded)
    for text-level tools, and the word that follows each. With ``cut``, each text keeps its first
    ``cut`` words (``seq_len < cut < 2 * seq_len``: it ends inside the repeat, so the next word is
    determined by induction); without, the whole ``A + A`` and the answer ``""``."""
    if cut is not None and not seq_len < cut < 2 * seq_len:
        raise ValueError(f"cut must be between seq_len and 2 * seq_len, got {cut}")
    rng = np.random.default_rng(seed)
    words = [" " + w for w in INDUCTION_WORDS]
    texts, answers = [], []
    for _ in range(n):
        half = [words[j] for j in rng.choice(len(words), size=seq_len, replace=False)]
        seq = half + half
        texts.append("".join(seq[:cut] if cut is not None else seq))
        answers.append(seq[cut] if cut is not None else "")
    return texts, answers


def ioi_prompts(n: int = 400, seed: int = 0) -> list[dict]:
    """``n`` IOI prompts: template ``i % len(IOI_TEMPLATES)``, order ABBA for even ``i // len``
    blocks and BABA otherwise (so both orders meet every template), two distinct random names.
    Each item: text, io, s (names with leading space), template index, order."""
    rng = np.random.default_rng(seed)
    out = []
    nt = len(IOI_TEMPLATES)
    for i in range(n):
        t = i % nt
        order = "ABBA" if (i // nt) % 2 == 0 else "BABA"
        io, s = (IOI_NAMES[j] for j in rng.choice(len(IOI_NAMES), size=2, replace=False))
        a, b = (io, s) if order == "ABBA" else (s, io)
        out.append(
            {
                "text": IOI_TEMPLATES[t].format(A=a, B=b, S=s),
                "io": " " + io,
                "s": " " + s,
                "template": t,
                "order": order,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Measuring (plain torch: output_attentions and forward pre-hooks on attn.c_proj)
# --------------------------------------------------------------------------------------------


def load(name_or_dir: str | Path):
    """``(GPT2LMHeadModel, tokenizer)`` from a shipped name or a directory."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    p = Path(name_or_dir)
    if not (p / "config.json").exists():
        p = MODELS_DIR / str(name_or_dir)
    model = GPT2LMHeadModel.from_pretrained(str(p), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(p))


def all_heads(model) -> list[str]:
    return [f"{i}.{h}" for i in range(model.config.n_layer) for h in range(model.config.n_head)]


@contextmanager
def ablate(model, heads: dict[str, object]) -> Iterator[None]:
    """Replace the outputs (the input of ``attn.c_proj``, per-head slice) of ``heads``:
    value ``None`` = zero-ablation, a ``[d_head]`` tensor = that constant (mean-ablation)."""
    dh = model.config.n_embd // model.config.n_head
    hooks = []
    for name, val in heads.items():
        layer, head = (int(x) for x in name.split("."))

        def pre(_mod, args, head=head, val=val):
            z = args[0].clone()
            z[..., head * dh : (head + 1) * dh] = 0.0 if val is None else val
            return (z,) + tuple(args[1:])

        hooks.append(model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for hk in hooks:
            hk.remove()


@contextmanager
def _capture_head_outputs(model, store: dict[str, list]) -> Iterator[None]:
    """Append each head's output ``[batch, pos, d_head]`` (the input of ``attn.c_proj``) to ``store``."""
    dh = model.config.n_embd // model.config.n_head
    hooks = []
    for layer, blk in enumerate(model.transformer.h):

        def pre(_mod, args, layer=layer):
            z = args[0].detach()
            for h in range(model.config.n_head):
                store.setdefault(f"{layer}.{h}", []).append(z[..., h * dh : (h + 1) * dh].clone())

        hooks.append(blk.attn.c_proj.register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for hk in hooks:
            hk.remove()


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def measure_induction(
    model, n: int = 200, seq_len: int = 30, seed: int = 0, ablations: bool = True
) -> dict:
    """Induction accuracy on repeated random sequences, per-head previous-token and induction scores,
    and the accuracy with each head zero-ablated."""
    import torch

    ids = induction_prompts(n, seq_len, seed)
    Lh = seq_len
    # second-half positions 1+L+m (m = 0..L-2) predict token 2+L+m (= token at 2+m)
    pred_pos = torch.arange(1 + Lh, 2 * Lh)
    targets = ids[:, pred_pos + 1]

    def accuracy() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(ids, attention_mask=torch.ones_like(ids)).logits
        pred = logits[:, pred_pos].argmax(-1)
        lp = torch.log_softmax(logits[:, pred_pos].double(), -1).gather(-1, targets[..., None])
        return (pred == targets).float().mean().item(), (-lp).mean().item()

    with torch.no_grad():
        out = model(ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    logits = out.logits
    acc = (logits[:, pred_pos].argmax(-1) == targets).float().mean().item()
    lp = torch.log_softmax(logits[:, pred_pos].double(), -1).gather(-1, targets[..., None])
    first_half_acc = (logits[:, 1:Lh].argmax(-1) == ids[:, 2 : Lh + 1]).float().mean().item()
    T = ids.shape[1]
    prev_score, ind_score = {}, {}
    i_all = torch.arange(1, T)
    # second half: the earlier occurrence of token i is at i - L, the token after it at i - L + 1
    i_ind = torch.arange(1 + Lh, T)
    for layer, att in enumerate(out.attentions):
        for h in range(model.config.n_head):
            a = att[:, h]
            prev_score[f"{layer}.{h}"] = _r(a[:, i_all, i_all - 1].mean())
            ind_score[f"{layer}.{h}"] = _r(a[:, i_ind, i_ind - Lh + 1].mean())
    res = {
        "prompts": {"generator": "induction_prompts", "n": n, "seq_len": seq_len, "seed": seed},
        "induction_accuracy": _r(acc),
        "induction_loss": _r((-lp).mean()),
        "first_half_accuracy": _r(first_half_acc),
        "previous_token_score": prev_score,
        "induction_score": ind_score,
    }
    if ablations:
        abl = {}
        for hname in all_heads(model):
            with ablate(model, {hname: None}):
                a, loss = accuracy()
            abl[hname] = {"accuracy": _r(a), "loss": _r(loss)}
        res["zero_ablation"] = abl
    return res


def ioi_batch(tokenizer, prompts: list[dict]):
    """One right-padded batch (pads are EOT after the prompt; causal attention keeps them out of
    every real position). Returns ``(ids [n, T], io [n], s [n], pos [n, 4])`` with ``pos`` the
    positions IO, S1 (first occurrence of S), S2 (second) and END (the last real token)."""
    import torch

    rows = [tokenizer(p["text"])["input_ids"] for p in prompts]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    io, s, pos = [], [], []
    for i, (row, p) in enumerate(zip(rows, prompts)):
        ids[i, : len(row)] = torch.tensor(row)
        iid, sid = (
            tokenizer.convert_tokens_to_ids(tokenizer.tokenize(p[k]))[0] for k in ("io", "s")
        )
        s_pos = [j for j, t in enumerate(row) if t == sid]
        io_pos = [j for j, t in enumerate(row) if t == iid]
        assert len(s_pos) == 2 and len(io_pos) == 1, (p, row)
        io.append(iid)
        s.append(sid)
        pos.append([io_pos[0], s_pos[0], s_pos[1], len(row) - 1])
    return ids, torch.tensor(io), torch.tensor(s), torch.tensor(pos)


def ioi_logit_diffs(model, tokenizer, prompts: list[dict], heads: dict | None = None):
    """Logit(IO) - logit(S) at each prompt's final position (prompt order), under ``ablate(heads)``."""
    import torch

    ids, io, s, pos = ioi_batch(tokenizer, prompts)
    with ablate(model, heads or {}), torch.no_grad():
        logits = model(ids, attention_mask=torch.ones_like(ids)).logits
    last = logits[torch.arange(len(ids)), pos[:, 3]]
    return last.gather(1, io[:, None])[:, 0] - last.gather(1, s[:, None])[:, 0]


def ioi_head_means(model, tokenizer, prompts: list[dict]) -> dict:
    """Each head's mean output ``[d_head]`` over all real positions of ``prompts`` (for mean-ablation)."""
    import torch

    ids, _, _, pos = ioi_batch(tokenizer, prompts)
    real = torch.arange(ids.shape[1])[None, :] <= pos[:, 3:4]
    store: dict[str, list] = {}
    with torch.no_grad(), _capture_head_outputs(model, store):
        model(ids, attention_mask=torch.ones_like(ids))
    return {h: v[0][real].mean(0) for h, v in store.items()}


def _diff_stats(d, threshold: float) -> dict:
    return {
        "mean": _r(d.mean()),
        "min": _r(d.min()),
        "max": _r(d.max()),
        "frac_positive": _r((d > 0).float().mean()),
        "frac_above_threshold": _r((d > threshold).float().mean()),
    }


def measure_ioi(model, tokenizer, n: int = 400, seed: int = 0, ablations: bool = True) -> dict:
    """IOI logit diff, per-head duplicate-token / S-inhibition / name-mover attention scores, and
    the logit diff with each head zero- and mean-ablated."""
    import torch

    prompts = ioi_prompts(n, seed)
    thr = THRESHOLDS["ioi"]["logit_diff"]
    base = ioi_logit_diffs(model, tokenizer, prompts)
    heads = all_heads(model)
    sums = {
        h: {"duplicate_token": 0.0, "s_inhibition": 0.0, "name_mover": 0.0, "end_to_s": 0.0}
        for h in heads
    }
    ids, io, s, pos = ioi_batch(tokenizer, prompts)
    with torch.no_grad():
        out = model(ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    b = torch.arange(len(ids))
    p_io, p_s1, p_s2, p_end = pos.T
    top1 = (out.logits[b, p_end].argmax(-1) == io).sum().item()
    for layer, att in enumerate(out.attentions):
        for h in range(model.config.n_head):
            a = att[:, h]
            r = sums[f"{layer}.{h}"]
            r["duplicate_token"] += a[b, p_s2, p_s1].sum().item()
            r["s_inhibition"] += a[b, p_end, p_s2].sum().item()
            r["name_mover"] += a[b, p_end, p_io].sum().item()
            r["end_to_s"] += (a[b, p_end, p_s1] + a[b, p_end, p_s2]).sum().item()
    means = ioi_head_means(model, tokenizer, prompts)
    scores = {
        k: {h: _r(sums[h][k] / n) for h in heads}
        for k in ("duplicate_token", "s_inhibition", "name_mover", "end_to_s")
    }
    by_order = {
        o: _diff_stats(base[[p["order"] == o for p in prompts]], thr) for o in ("ABBA", "BABA")
    }
    by_template = {
        str(t): _r(base[[p["template"] == t for p in prompts]].mean())
        for t in range(len(IOI_TEMPLATES))
    }
    res = {
        "prompts": {"generator": "ioi_prompts", "n": n, "seed": seed},
        "logit_diff": _diff_stats(base, thr),
        "logit_diff_by_order": by_order,
        "logit_diff_mean_by_template": by_template,
        "top1_is_io": _r(top1 / n),
        "attention_scores": {
            "duplicate_token (S2 -> S1)": scores["duplicate_token"],
            "s_inhibition (END -> S2)": scores["s_inhibition"],
            "name_mover (END -> IO)": scores["name_mover"],
            "end_to_s (END -> S1 + S2)": scores["end_to_s"],
        },
    }
    if ablations:
        za, ma = {}, {}
        for h in heads:
            za[h] = _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {h: None}), thr)
            ma[h] = _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {h: means[h]}), thr)
        res["zero_ablation"] = za
        res["mean_ablation"] = ma
    return res


def ioi_reference(prompts: list[dict], seed: int = 1) -> list[dict]:
    """For each IOI prompt, one with the same template and order (so the same token length and
    name positions) and two other names, disjoint from its IO and S: the source of resample
    ablation and of corrupt runs."""
    rng = np.random.default_rng(seed)
    out = []
    for p in prompts:
        pool = [n for n in IOI_NAMES if " " + n not in (p["io"], p["s"])]
        io, s = (pool[j] for j in rng.choice(len(pool), size=2, replace=False))
        a, b = (io, s) if p["order"] == "ABBA" else (s, io)
        t = p["template"]
        out.append(
            {"text": IOI_TEMPLATES[t].format(A=a, B=b, S=s), "io": " " + io, "s": " " + s,
             "template": t, "order": p["order"]}
        )  # fmt: skip
    return out


def ioi_head_outputs(model, tokenizer, prompts: list[dict]) -> dict:
    """Each head's output ``[n, T, d_head]`` (the input of ``attn.c_proj``) on ``ioi_batch(prompts)``."""
    import torch

    ids, _, _, _ = ioi_batch(tokenizer, prompts)
    store: dict[str, list] = {}
    with torch.no_grad(), _capture_head_outputs(model, store):
        model(ids, attention_mask=torch.ones_like(ids))
    return {h: v[0] for h, v in store.items()}


def measure_ioi_backup(model, tokenizer, n: int = 400, seed: int = 0) -> dict:
    """The ``ioi`` figures plus, per head, the logit diff under zero, mean and resample ablation,
    and the *direct effect* of the name mover (2.3 ablated while every later head is frozen at its
    clean output: path patching to the logits)."""
    prompts = ioi_prompts(n, seed)
    ref = ioi_reference(prompts, seed + 1)
    thr = THRESHOLDS["ioi"]["logit_diff"]
    res = measure_ioi(model, tokenizer, n=n, seed=seed, ablations=False)
    heads = all_heads(model)
    means = ioi_head_means(model, tokenizer, prompts)
    clean_out = ioi_head_outputs(model, tokenizer, prompts)
    ref_out = ioi_head_outputs(model, tokenizer, ref)
    za, ma, ra = {}, {}, {}
    for h in heads:
        za[h] = _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {h: None}), thr)
        ma[h] = _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {h: means[h]}), thr)
        ra[h] = _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {h: ref_out[h]}), thr)
    later = [h for h in heads if int(h.split(".")[0]) > 2]
    frozen = {h: clean_out[h] for h in later}
    nm = IOI_BACKUP_HEADS["name_mover"]
    bk = IOI_BACKUP_HEADS["backup_name_mover"]
    res["zero_ablation"] = za
    res["mean_ablation"] = ma
    res["resample_ablation"] = ra
    res["name_mover_and_backup_zero_ablated"] = _diff_stats(
        ioi_logit_diffs(model, tokenizer, prompts, {nm: None, bk: None}), thr
    )
    res["name_mover_direct_effect"] = {
        kind: _diff_stats(ioi_logit_diffs(model, tokenizer, prompts, {nm: val, **frozen}), thr)
        for kind, val in (("zero", None), ("mean", means[nm]), ("resample", ref_out[nm]))
    }
    res["resample_reference"] = {"generator": "ioi_reference", "seed": seed + 1}
    return res


THRESHOLDS = {
    "induction": {
        "induction_accuracy_min": 0.99,
        "planted_score_min": 0.9,
        "decoy_score_max": 0.2,
        "ablated_planted_accuracy_max": 0.1,
        "ablated_decoy_accuracy_min": 0.99,
    },
    "ioi": {
        "logit_diff": 2.0,
        "frac_above_threshold_min": 0.95,
        "planted_score_min": 0.9,
        "decoy_score_max": 0.2,
        "name_mover_ablated_mean_abs_max": 0.5,
        "s_inhibition_or_duplicate_ablated_mean_max": 1.0,
        "decoy_ablated_relative_change_max": 0.05,
    },
    "ioi_backup": {
        "logit_diff": 2.0,
        "clean_logit_diff_min": 6.0,
        "planted_score_min": 0.9,
        "look_alike_score_min": 0.9,
        "decoy_ablated_abs_change_max": 0.2,
        "zero_ablated_name_mover_drop_max": 0.5,
        "true_name_mover_drop_min": 8.0,
        "suppression_rise_min": 2.0,
    },
    "illusion": {
        "accuracy_min": 0.99,
        "causal_iia_min": 0.9,
        "disconnected_iia_max": 0.1,
    },
}


# --------------------------------------------------------------------------------------------
# Ground truth and command line
# --------------------------------------------------------------------------------------------

MECHANISM = {
    "induction": (
        "Two attention-only layers (MLPs are zero). Head 0.1 is a previous-token head: its query is "
        "the sinusoid position code of position i rotated back one step and its key the code of "
        "position j, so it attends to i-1; its OV copies the attended token's one-hot identity into "
        "the residual's 'prev' block. Head 1.2 is an induction head: its query is the current token "
        "(the 'tok' block), its key the 'prev' block, so at the second occurrence of a token it "
        "attends to the position right after the first occurrence; its OV copies that position's "
        "token into the 'answer' block, and lm_head reads only the 'answer' block (logit 10 for the "
        "copied token, 0 for the others, -5 for BOS/unk). When no earlier occurrence exists, head "
        "1.2 falls back to BOS, whose value is 0, so the logits are flat. The six other heads are "
        "decoys: they attend to BOS, uniformly, or to their own position, and write nothing or "
        "write into the 'decoy' block, which nothing reads."
    ),
    "ioi": (
        "Three attention-only layers (MLPs are zero), a content-based IOI circuit. Head 0.1 is a "
        "duplicate-token head: its query/key match name identities, a position-code term keeps it "
        "off its own position and a bias gives BOS a fallback score, so at a name seen before (S2) "
        "it attends to the first occurrence (S1) and anywhere else it attends to BOS; it writes a "
        "'dup' flag (1 at S2, 0 elsewhere). Head 1.2 is an S-inhibition head: its constant query "
        "looks for the dup flag, so from S2 on (in particular at the final position END) it "
        "attends to S2 and writes S's name identity into the 'inhib' block. Head 2.3 is a name "
        "mover: at END its query scores every name +20 and the name in 'inhib' -30 below that, so "
        "it attends to IO, and its OV copies the attended name into the 'answer' block, which "
        "lm_head reads (logit 10 for the copied name, 0 for other names, -5 for non-names). "
        "Without the S-inhibition signal (ablate 1.2 or 0.1) the name mover splits attention over "
        "IO, S1 and S2, so the logit diff IO - S turns negative (about -10/3). The nine other heads "
        "are decoys (BOS, uniform or self attention; they write nothing or into the unread 'decoy' "
        "block)."
    ),
    "ioi_backup": (
        "Four attention-only layers (MLPs are zero): the ioi circuit (0.1 duplicate-token, 1.2 "
        "S-inhibition, 2.3 name mover) plus three harder parts. (1) Self-repair: 2.3 also writes a "
        "'moved' flag (its attention on names, 1 at END). Head 3.0 is a backup name mover with 2.3's "
        "query/key and an extra BOS score of 60 x moved: while 2.3 works, 3.0 attends to BOS (value "
        "0) and writes nothing; when 2.3 writes nothing (zero-ablation) the flag is 0 and 3.0 copies "
        "IO into 'answer' exactly as 2.3 did, so zero-ablating 2.3 leaves the logit diff unchanged. "
        "Mean- and resample-ablation keep the flag up (its mean is about 0.77; a resampled 2.3 "
        "output carries flag 1 and another prompt's name), so they show 2.3's real contribution "
        "(about -10), as does its direct effect with later heads frozen. (2) Suppression: head 2.1 "
        "has 2.3's query/key (attends to IO) and writes -0.3 x IO into 'answer': the clean logit "
        "diff is 10 - 3 = 7, and ablating 2.1 raises it to about 10. (3) Attention decoys: 0.2, "
        "1.3 and 2.0 copy the attention patterns of 0.1, 1.2 and 2.3 (scores x1.25, so they look "
        "at least as good), and 0.3 is a perfect previous-token head; all four write only into the "
        "unread 'decoy' block, so ablating them changes nothing. The other heads are plain decoys."
    ),
    "illusion": (
        "Two attention-only layers. Task: the answer is ' apple' when the first word is of class A "
        "(illusion_classes()[0]) and ' river' for class B. Head 0.1 (the mechanism) attends to "
        "position 1 and copies the first word's class (one-hot 'cls') into 'cls_first', which "
        "lm_head reads (logit 10 for the class's answer). Head 0.2 attends to position 1 too and "
        "writes the class as a sign (+1 A, -1 B) into 'shadow', which nothing reads "
        "(disconnected). Head 1.0 attends to its own position and moves 'dormant' into "
        "'cls_first' (+3 A, -3 B per unit); nothing writes 'dormant', so 1.0 writes nothing on real "
        "inputs (a dormant pathway). In the input of block 1 the direction u = (e_shadow + "
        "e_dormant)/sqrt(2) separates the classes (through 'shadow'), and an interchange along u "
        "flips the answer every time (it moves 'dormant' by 1/sqrt(2), which 1.0 turns into a "
        "logit change of about 21); yet neither part is the mechanism: along 'shadow' alone or "
        "'dormant' alone the interchange does nothing, and ablating 0.2 or 1.0 changes nothing. "
        "The real mechanism is 'cls_first' (written by 0.1). This is the interpretability illusion "
        "of Makelov et al. (2023)."
    ),
}

PROMPTS_DOC = {
    "induction": {
        "generator": "mi_widgets.zoo.compiled.induction_prompts",
        "args": {"n": 200, "seq_len": 30, "seed": 0},
        "description": (
            "BOS + A + A, A = seq_len distinct words drawn at random from the 62 words of the "
            "vocabulary (no repeats within A, so each next token in the second half is determined). "
            "Accuracy and loss are over the second-half positions 1+L .. 2L-1 (predicting tokens "
            "2+L .. 2L). previous_token_score = mean attention from i to i-1 over i >= 1; "
            "induction_score = mean attention from second-half position i to i-L+1 (the token after "
            "the earlier occurrence of the current token)."
        ),
    },
    "ioi": {
        "generator": "mi_widgets.zoo.compiled.ioi_prompts",
        "args": {"n": 400, "seed": 0},
        "description": (
            "IOI prompts from the 10 templates in IOI_TEMPLATES (lengths 13 to 26 tokens, names at "
            "different positions, one template with the two names not adjacent), both orders (ABBA: "
            "IO first; BABA: S first) for every template, two distinct names drawn from 30. "
            "logit_diff = logit(IO) - logit(S) at the final position. Attention scores: "
            "duplicate_token = attention S2 -> S1; s_inhibition = END -> S2; name_mover = END -> IO; "
            "end_to_s = END -> S1 + S2. Ablations replace one head's output (its slice of the input "
            "of attn.c_proj) by 0 (zero) or by its mean over all positions of all prompts (mean)."
        ),
    },
    "ioi_backup": {
        "generator": "mi_widgets.zoo.compiled.ioi_prompts",
        "args": {"n": 400, "seed": 0},
        "description": (
            "The ioi prompts (same generator). Resample ablation takes a head's output, at every "
            "position, from ioi_reference(prompts, seed=1): the same template and order with two "
            "other names (disjoint from IO and S). name_mover_direct_effect ablates 2.3 while every "
            "layer-3 head is frozen at its clean output (path patching from 2.3 to the logits)."
        ),
    },
    "illusion": {
        "generator": "mi_widgets.zoo.compiled.illusion_prompts",
        "args": {"n": 200, "seed": 0},
        "description": (
            "Six distinct class words; the first word's class alternates (label 1 = A, answer "
            "' apple'; label 0 = B, answer ' river'). Interchange accuracy: each prompt (base) with "
            "its neighbour (source, the other label), the input of block 1 at the last position "
            "edited to h_b + ((h_s - h_b) . d) d for each unit direction d of "
            "illusion_directions(); success = the model gives the source's answer."
        ),
    },
}


def ground_truth_record(name: str, model_dir: Path, figures: dict) -> dict:
    from transformers import GPT2Config

    cfg = GPT2Config.from_pretrained(str(model_dir))
    import safetensors.numpy

    n_params = sum(
        v.size for v in safetensors.numpy.load_file(str(model_dir / "model.safetensors")).values()
    )
    heads = {"induction": INDUCTION_HEADS, "ioi": IOI_HEADS, "ioi_backup": IOI_BACKUP_HEADS,
             "illusion": ILLUSION_HEADS}[name]  # fmt: skip
    components = {k: v for k, v in heads.items() if k not in ("decoys", "attention_decoys")}
    components["decoys"] = sorted(heads["decoys"])
    if "attention_decoys" in heads:
        components["attention_decoys"] = sorted(heads["attention_decoys"])
    planted_roles = {
        "induction": {
            "0.1": "previous-token head: attends i -> i-1, writes the previous token into the 'prev' block",
            "1.2": "induction head: query = current token, key = 'prev' block; copies the token after the earlier occurrence into 'answer'",
        },
        "ioi": {
            "0.1": "duplicate-token head: at S2 attends to S1 (else BOS), writes the 'dup' flag",
            "1.2": "S-inhibition head: attends to the dup-flagged position (S2), writes S's identity into 'inhib'",
            "2.3": "name mover: attends to names except the one in 'inhib' (so to IO), copies it into 'answer' (read by lm_head)",
        },
        "ioi_backup": {
            "0.1": "duplicate-token head: at S2 attends to S1 (else BOS), writes the 'dup' flag",
            "1.2": "S-inhibition head: attends to the dup-flagged position (S2), writes S's identity into 'inhib'",
            "2.3": "name mover: attends to IO, copies it into 'answer' and writes the 'moved' flag",
            "2.1": "suppression head: attends to IO like 2.3, writes -0.3 x IO into 'answer' (lowers the right answer)",
            "3.0": "backup name mover: silent (attends to BOS) while the 'moved' flag is up; copies IO into 'answer' when 2.3 is zero-ablated",
        },
        "illusion": {
            "0.1": "mechanism: attends to position 1, copies the first word's class into 'cls_first' (read by lm_head)",
            "0.2": "disconnected: attends to position 1, writes the class as a sign into 'shadow' (read by nothing)",
            "1.0": "dormant pathway: moves 'dormant' (never written) into 'cls_first'",
        },
    }[name]
    return {
        "model": name,
        "kind": "compiled: weights set by hand in mi_widgets/zoo/compiled.py, no training",
        "mechanism": MECHANISM[name],
        "architecture": {
            "class": "GPT2LMHeadModel",
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "d_model": cfg.n_embd,
            "d_head": cfg.n_embd // cfg.n_head,
            "d_mlp": cfg.n_inner or 4 * cfg.n_embd,
            "n_positions": cfg.n_positions,
            "vocab_size": cfg.vocab_size,
            "n_params": int(n_params),
            "tie_word_embeddings": False,
            "notes": "MLP weights and biases are all 0 (the MLPs output 0); LayerNorm weights 1, biases 0.",
        },
        "components": components,
        "component_roles": {
            **planted_roles,
            **heads.get("attention_decoys", {}),
            **heads["decoys"],
        },
        "residual_layout": layout(name).as_json(),
        "prompts": PROMPTS_DOC[name],
        "figures": figures,
        "thresholds": THRESHOLDS[name],
        "commands": {
            "rebuild": "python -m mi_widgets.zoo.compiled",
            "measure": f"python -m mi_widgets.zoo.compiled --measure {name}",
            "test": "python -m pytest tests/zoo/test_zoo_harder.py"
            if name in ("ioi_backup", "illusion")
            else "python -m pytest tests/test_zoo_compiled.py",
        },
    }


def measure(name: str, model_dir: Path | None = None) -> dict:
    import torch

    torch.manual_seed(0)
    model, tok = load(model_dir or name)
    if name == "induction":
        return measure_induction(model, **PROMPTS_DOC[name]["args"])
    if name == "ioi_backup":
        return measure_ioi_backup(model, tok, **PROMPTS_DOC[name]["args"])
    if name == "illusion":
        return measure_illusion(model, tok, **PROMPTS_DOC[name]["args"])
    return measure_ioi(model, tok, **PROMPTS_DOC[name]["args"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m mi_widgets.zoo.compiled", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--out", type=Path, default=MODELS_DIR, help="write <out>/<name>/ (default: the zoo)"
    )
    ap.add_argument("--only", choices=sorted(BUILDERS), help="build one model")
    ap.add_argument(
        "--no-measure", action="store_true", help="skip measuring; leave ground_truth.json alone"
    )
    ap.add_argument("--measure", choices=sorted(BUILDERS), metavar="NAME",
                    help="only measure the model in <out>/NAME and print the figures as JSON")  # fmt: skip
    args = ap.parse_args(argv)

    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.measure:
        print(json.dumps(measure(args.measure, args.out / args.measure), indent=2))
        return
    for name in [args.only] if args.only else sorted(BUILDERS):
        out = args.out / name
        build(name, out)
        print(f"built {out}", file=sys.stderr)
        if not args.no_measure:
            figures = measure(name, out)
            rec = ground_truth_record(name, out, figures)
            (out / "ground_truth.json").write_text(
                json.dumps(rec, indent=2) + "\n", encoding="utf-8"
            )
            print(f"measured {out / 'ground_truth.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
