"""Loading models and one vocabulary of component names across architectures.

``load()`` returns a :class:`Model`: an nnsight model plus the names a researcher uses
(TransformerLens' vocabulary): ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``,
``mlp_out``, ``mlp_post`` (neurons), ``head_out`` (each head's write into the residual
stream) and ``attn_pattern``. Every view and method reads sites through :meth:`Model.run`, so
nothing downstream branches on the model family.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .families import (
    _SITE_HELP,
    SITES,
    Arch,
    _arch_for,
    _dims,
    _get,
    _prepare_model,
    _remote_arch,
    arch_from_components,
    check_supported,
)
from .lock import install as install_lock
from .remote import check_remote


class Model:
    """A transformer behind nnsight, with standard component names.

    Attributes: ``nn`` (the nnsight model), ``hf`` (the torch module), ``tokenizer``,
    ``name``, ``family``, ``n_layers``, ``n_heads``, ``d_model``, ``d_head``, ``d_mlp``,
    ``d_vocab``, ``causal``.
    """

    def __init__(
        self,
        nn_model: Any,
        hf: torch.nn.Module,
        tokenizer: Any,
        name: str,
        *,
        remote: bool | str = False,
        components: Arch | dict[str, Any] | None = None,
    ):
        self.nn = nn_model
        self.hf = hf
        self.tokenizer = tokenizer
        self.name = name
        self.remote = remote
        # the component map: built in per family (families.py), or the caller's own
        self.arch = _arch_for(hf) if components is None else arch_from_components(hf, components)
        if remote is True and components is None:
            self.arch = _remote_arch(hf, self.arch)
        self.family = self.arch.family
        dims = _dims(hf, self.arch)
        self.n_layers, self.n_heads = dims["n_layers"], dims["n_heads"]
        self.d_model, self.d_head, self.d_mlp = dims["d_model"], dims["d_head"], dims["d_mlp"]
        self.d_vocab, self.n_ctx = dims["d_vocab"], dims["n_ctx"]
        self.causal = self.arch.causal
        # every forward on this model (nnsight or torch) holds self.lock; see lock.py
        install_lock(self)

    # -- description -------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, family={self.family}, n_layers={self.n_layers}, "
            f"n_heads={self.n_heads}, d_model={self.d_model}, d_mlp={self.d_mlp}, d_vocab={self.d_vocab})"
        )

    @property
    def device(self) -> torch.device:
        try:
            dev = next(self.hf.parameters()).device
        except StopIteration:  # pragma: no cover
            return torch.device("cpu")
        # remote=True: the weights are on the meta device; inputs stay on the CPU and travel.
        return torch.device("cpu") if dev.type == "meta" else dev

    @property
    def sites(self) -> tuple[str, ...]:
        """Sites this model defines (``resid_mid`` is undefined for parallel-residual blocks,
        ``mlp_post`` for mixture-of-experts MLPs; :meth:`site_help` says why)."""
        return tuple(s for s in SITES if s in self.arch.reads)

    def site_help(self, site: str) -> str:
        """What ``site`` holds in this model, or why it is not defined (docs/models.md)."""
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
        if site not in self.arch.reads:
            return f"{site}: not defined for {self.family} ({self.arch.absent.get(site, 'not in the component map')})"
        note = self.arch.notes.get(site)
        return f"{site}: {_SITE_HELP[site]}" + (f"; {self.family}: {note}" if note else "")

    def site_width(self, site: str) -> int:
        """Number of units a site has per token: neurons, dimensions or heads."""
        self.check_site(site)
        return {"mlp_post": self.d_mlp, "head_out": self.n_heads, "attn_pattern": self.n_heads}.get(
            site, self.d_model
        )

    # -- validation (cheap, before any forward pass) ----------------------------------

    def check_site(self, site: str, layer: int | None = None) -> None:
        """Raise ``ValueError`` naming the problem if ``site`` or ``layer`` is not valid."""
        if site not in SITES:
            raise ValueError(
                f"unknown site {site!r}; choose one of {', '.join(SITES)}"
            )
        if site not in self.arch.reads:
            why = self.arch.absent.get(site, "not in its component map")
            raise ValueError(
                f"site {site!r} is not defined for {self.name} ({self.family}, {why}); "
                f"choose one of {', '.join(self.sites)}"
            )
        if layer is not None:
            self.check_layer(layer)

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layer must be an int in 0..{self.n_layers - 1}, got {layer!r}")
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: {self.name} has {self.n_layers} layers (0..{self.n_layers - 1})"
            )
        return layer

    def check_tokens(self, tokens: Any) -> None:
        """Raise unless ``tokens`` is an integer tensor ``[1, T]`` of ids in the vocabulary with
        ``T <= n_ctx`` (checked before any forward, so a bad id never reaches the embedding)."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a tensor of token ids [1, T] (model.to_tokens(text)), got {type(tokens).__name__}")
        if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"tokens must hold integer token ids (torch.long), got dtype {tokens.dtype}")
        if tokens.ndim != 2 or tokens.shape[0] != 1:
            raise ValueError(f"tokens must have shape [1, T], got {list(tokens.shape)}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens is empty; give at least one token")
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(f"tokens are {tokens.shape[1]} long but {self.name} takes at most {self.n_ctx}; shorten them")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.d_vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} is outside the vocabulary of {self.name} (0..{self.d_vocab - 1})"
            )

    # -- tokens ------------------------------------------------------------------------

    def to_tokens(self, text: str, *, prepend_bos: bool | None = None) -> torch.Tensor:
        """Token ids ``[1, T]`` as the model sees them (the tokenizer's special tokens, so the
        zoo models get their BOS; ``prepend_bos=True`` forces a BOS where the tokenizer adds none)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if text == "":
            raise ValueError("text is empty; give at least one character of text")
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        bos = self.tokenizer.bos_token_id
        if prepend_bos and bos is not None and (ids.shape[1] == 0 or ids[0, 0].item() != bos):
            ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)
        if ids.shape[1] == 0:
            raise ValueError(f"text {text!r} produced no tokens")
        if ids.shape[1] > self.n_ctx:
            raise ValueError(
                f"text is {ids.shape[1]} tokens long but {self.name} takes at most {self.n_ctx}; shorten it"
            )
        return ids

    def to_str_tokens(self, text: str | torch.Tensor, *, prepend_bos: bool | None = None) -> list[str]:
        """The text's tokens as strings, one per position (decoded one token at a time)."""
        ids = text if isinstance(text, torch.Tensor) else self.to_tokens(text, prepend_bos=prepend_bos)
        return [_token_str(self.tokenizer, int(i)) for i in ids.reshape(-1).tolist()]

    def token_str(self, token_id: int) -> str:
        """One token as a string; a byte-level token holding only part of a multi-byte character
        shows its bytes as escapes (``\\xe2\\x80``) rather than U+FFFD."""
        return _token_str(self.tokenizer, int(token_id))

    def next_tokens(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The model's top-k next tokens after ``text`` with their probabilities (one plain
        forward; only the last position is unembedded by the caller's view)."""
        if not self.causal:
            raise ValueError(f"{self.name} ({self.family}) is not a causal language model; it predicts no next token")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        ids = self.to_tokens(text).to(self.device)
        if self.remote:  # one trace (the weights may be on NDIF); its body names no self
            nn = self.nn
            with torch.no_grad(), nn.trace(ids, attention_mask=torch.ones_like(ids), remote=self.remote):
                logits = nn.output.logits[0, -1].float().save()
        else:
            with torch.no_grad():
                logits = self.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs, min(k, probs.shape[0]))
        return [(_token_str(self.tokenizer, int(i)), float(p)) for p, i in zip(top.values, top.indices)]

    # -- running -----------------------------------------------------------------------

    def _module(self, layer: int, rel: str) -> Any:
        block = _get(self.nn, self.arch.layers, envoy=True)[layer]
        return _get(block, rel, envoy=True)

    def _read_key(self, site: str, layer: int) -> tuple[int, int, str, str]:
        """``(layer, order, module, io)``: the module value ``site`` is read from; sorted keys are
        the execution order nnsight requires, and sites with one key share one save."""
        r = self.arch.reads[site]
        return (layer, r.order, r.module, r.io)

    def _read_groups(self, reads: Iterable[tuple[str, int]]) -> dict[tuple[int, int, str, str], list[tuple[str, int]]]:
        """The ``(site, layer)`` reads grouped by :meth:`_read_key`."""
        keys: dict[tuple[int, int, str, str], list[tuple[str, int]]] = {}
        for site, layer in reads:
            keys.setdefault(self._read_key(site, layer), []).append((site, layer))
        return keys

    def _element(self, site: str, raw: Any) -> Any:
        """``site``'s value in the saved module value ``raw``: its tuple element where it has one."""
        item = self.arch.reads[site].item
        return raw[item] if (item is not None and isinstance(raw, (tuple, list))) else raw

    def run(self, tokens: torch.Tensor, reads: list[tuple[str, int]]) -> dict[tuple[str, int], torch.Tensor]:
        """One forward pass that returns the requested ``(site, layer)`` values for a single
        sequence, on the CPU in float32, without the batch dimension:
        ``[T, d]`` for vector sites, ``[T, n_heads, d_model]`` for ``head_out``,
        ``[n_heads, T, T]`` for ``attn_pattern``.

        Reads are issued in execution order, as nnsight requires; sites that share a module
        (``attn_out`` and ``attn_pattern``) read it once.
        """
        if not isinstance(reads, (list, tuple)) or not all(
            isinstance(r, (tuple, list)) and len(r) == 2 and isinstance(r[0], str) for r in reads
        ):
            raise TypeError(
                f"reads must be a list of (site, layer) tuples, e.g. [('resid_post', 0)], got {reads!r}"
            )
        reads = [(site, layer) for site, layer in reads]
        for site, layer in reads:
            self.check_site(site, layer)
        self.check_tokens(tokens)
        keys = self._read_groups(dict.fromkeys(reads))
        # The trace body names only envoys and small values (never self: its tokenizer would be
        # pickled into every remote request). head_out is z @ W_O per head, computed inside the
        # trace from the projection's own weight, so it also runs where the weights are remote.
        plan = [
            (key, self._module(key[0], key[2]), key[3], any(s == "head_out" for s, _ in keys[key]))
            for key in sorted(keys)
        ]
        nh, dh, conv = self.n_heads, self.d_head, self.arch.o_proj_kind == "conv1d"
        saved: dict[tuple[int, int, str, str], Any] = {}
        with torch.no_grad(), self.nn.trace(tokens.to(self.device), remote=self.remote):
            for key, envoy, io, per_head in plan:
                value = envoy.input if io == "input" else envoy.output
                if per_head:
                    w = envoy.weight if conv else envoy.weight.T  # [n_heads*d_head, d_model]
                    z = value[0]
                    value = torch.einsum(
                        "thd,hdm->thm", z.reshape(z.shape[0], nh, dh).float(), w.reshape(nh, dh, -1).float()
                    )
                saved[key] = value.save()
        out: dict[tuple[str, int], torch.Tensor] = {}
        for key, wanted in keys.items():
            raw = saved[key]
            for site, layer in wanted:
                value = self._element(site, raw)
                if site == "attn_pattern" and value is None:
                    raise RuntimeError(
                        f"{self.name} returned no attention probabilities; load it with "
                        "attn_implementation='eager' (mi_widgets.load does so by default)"
                    )
                value = value.detach() if site == "head_out" else value.detach()[0]
                out[(site, layer)] = value.float().cpu()
        return out

    def _head_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head writes ``[T, n_heads, d_model]`` from the output projection's input z and the
        local weights (the reference :meth:`run` is checked against; needs local weights)."""
        proj = _get(self.hf, self.arch.layers)[layer]
        proj = _get(proj, self.arch.o_proj)
        w = proj.weight.detach()
        w = w if self.arch.o_proj_kind == "conv1d" else w.T  # -> [n_heads*d_head, d_model]
        t = z.shape[0]
        zh = z.reshape(t, self.n_heads, self.d_head).float()
        wh = w.reshape(self.n_heads, self.d_head, -1).float()
        return torch.einsum("thd,hdm->thm", zh, wh)


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_OF = _bytes_to_unicode()


def _token_str(tokenizer: Any, i: int) -> str:
    """One token as a string. A byte-level token holding part of a multi-byte character (an
    emoji, CJK, an RTL mark split over tokens) decodes to U+FFFD; show its bytes honestly as
    escapes instead (``\\xe2\\x80``), keeping the whole characters it does hold."""
    s = tokenizer.decode([i])
    if "\ufffd" not in s:
        return s
    piece = tokenizer.convert_ids_to_tokens(i)
    if not isinstance(piece, str) or not all(ch in _BYTE_OF for ch in piece):
        return s  # not byte-level BPE: nothing better to show
    raw = bytes(_BYTE_OF[ch] for ch in piece)
    return raw.decode("utf-8", errors="backslashreplace")


def _resolve(name_or_path: str | os.PathLike | None) -> tuple[str, str]:
    """Return (display name, local dir or hub id)."""
    if name_or_path is None:
        from ... import zoo

        return f"zoo:{zoo.DEFAULT}", str(zoo.path(zoo.DEFAULT))
    name = str(name_or_path)
    if name.startswith("zoo:"):
        from ... import zoo

        return name, str(zoo.path(name))
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(
                f"{p} exists but has no config.json; point load() at a Hugging Face model directory "
                "(config.json + weights + tokenizer files)"
            )
        return name, str(p)
    return name, name


def load(
    name_or_path: str | os.PathLike | None = None,
    *,
    remote: bool | str = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str = "eager",
    components: Arch | dict[str, Any] | None = None,
    **kwargs: Any,
) -> Model:
    """Load a model and wrap it as a :class:`Model`.

    ``name_or_path``: ``None`` for the embedded trained model (``"zoo:tiny"``), ``"zoo:<name>"``
    for another zoo model, a local Hugging Face directory, or a Hub id (downloaded by
    transformers; needs network). ``remote=True`` builds the model on the meta device (config
    and tokenizer only, no weights) and runs every trace on NDIF through nnsight
    (``nnsight.CONFIG`` must hold your API key); ``remote="local"`` loads the weights here and
    runs every trace through nnsight's local simulation of a remote run (see :mod:`.remote`).
    ``attn_implementation="eager"`` keeps attention probabilities readable. ``device`` and
    ``dtype`` (a ``torch.dtype`` or its name, e.g. ``"bfloat16"``) place the weights; values read
    from the model still come back float32 on the CPU. ``components``: your own component map
    for a family without a built-in one (a dict or :class:`Arch`; docs/models.md). Extra keyword
    arguments go to ``from_pretrained``.
    """
    from nnsight.modeling.transformers import TransformersModel
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoTokenizer,
    )

    remote = check_remote(remote)
    display, source = _resolve(name_or_path)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'float16', 'bfloat16'")
        dtype = getattr(torch, dtype)
    elif dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or its name (e.g. 'bfloat16'), got {type(dtype).__name__}")
    local = Path(source).exists()
    try:
        config = AutoConfig.from_pretrained(source, **({} if local else {"trust_remote_code": kwargs.get("trust_remote_code", False)}))
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ValueError(
            f"could not load model {display!r}: it is not a zoo name ({_zoo_names()}), "
            f"not a local directory, and the Hugging Face Hub did not provide it"
            f"{' (HF_HUB_OFFLINE=1 is set)' if offline else ' (no network, or a misspelt id?)'}. "
            "Pass a local model directory, or check the id and your connection. "
            f"Underlying error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if components is None:
        check_supported(config)  # before any weights are loaded
    archs = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_decoder", False) or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        auto, task = AutoModelForCausalLM, "text-generation"
    elif any(a.endswith("ForMaskedLM") for a in archs):
        auto, task = AutoModelForMaskedLM, "fill-mask"
    else:
        auto, task = AutoModel, "feature-extraction"

    if remote is True:
        # Weights stay on NDIF: nnsight builds the module tree on the meta device from the
        # config, and every trace of this Model is sent with remote=True.
        tokenizer = AutoTokenizer.from_pretrained(source)
        nn_model = TransformersModel(
            source, task=task, tokenizer=tokenizer, attn_implementation=attn_implementation, **kwargs
        )
        return Model(nn_model, nn_model._module, nn_model.tokenizer, display, remote=True, components=components)

    load_kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, **kwargs}
    if dtype is not None:
        load_kwargs["dtype"] = dtype
    try:
        with _quiet_progress(display.startswith("zoo:")):
            hf = auto.from_pretrained(source, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(
            f"model {display!r} has a config but its weights or tokenizer could not be loaded from {source}: "
            f"{str(exc).splitlines()[0]}. Check that the directory holds model.safetensors (or "
            "pytorch_model.bin) and tokenizer files."
        ) from None
    hf.eval()
    if device is not None:
        hf.to(device)
    _prepare_model(hf)
    return Model(_nnsight(hf, tokenizer, task), hf, tokenizer, display, remote=remote, components=components)


class _quiet_progress:
    """Hide transformers' weight-loading bar for the embedded models (they load in milliseconds)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.was_enabled = True

    def __enter__(self) -> None:
        if self.quiet:
            from transformers.utils import logging as hf_logging

            self.was_enabled = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()

    def __exit__(self, *exc: Any) -> None:
        if self.quiet and self.was_enabled:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


def wrap(
    hf: torch.nn.Module,
    tokenizer: Any,
    name: str | None = None,
    *,
    remote: bool | str = False,
    components: Arch | dict[str, Any] | None = None,
) -> Model:
    """Wrap an already-loaded transformers model (e.g. a randomly initialised config);
    ``remote="local"`` runs its traces through nnsight's local simulation of a remote run;
    ``components``: your own component map (docs/models.md)."""
    remote = check_remote(remote)
    if getattr(hf.config, "_attn_implementation", "eager") != "eager":
        hf.config._attn_implementation = "eager"
    task = "text-generation" if getattr(hf, "can_generate", lambda: False)() else (
        "fill-mask" if type(hf).__name__.endswith("ForMaskedLM") else "feature-extraction"
    )
    hf.eval()
    _prepare_model(hf)
    return Model(
        _nnsight(hf, tokenizer, task), hf, tokenizer, name or type(hf).__name__, remote=remote, components=components
    )


def _nnsight(hf: torch.nn.Module, tokenizer: Any, task: str) -> Any:
    import warnings

    from nnsight.modeling.transformers import TransformersModel

    with warnings.catch_warnings():
        # BERT's `output` submodules are renamed E_output by nnsight, with a warning; _get knows.
        warnings.filterwarnings("ignore", message=".*nnsight already serves.*")
        return TransformersModel(hf, tokenizer=tokenizer, task=task)


def _zoo_names() -> str:
    from ... import zoo

    return ", ".join(f"zoo:{n}" for n in zoo.available())
