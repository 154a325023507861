"""Tiny randomly initialised models of every supported family (no download), shared by the tests
(importable as ``_families`` from any test directory; a sub-directory's conftest would shadow a
``from conftest import``)."""

from __future__ import annotations

import torch


def _family_model(family: str, vocab: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if family not in _CONFIGS:  # pragma: no cover
        raise ValueError(family)
    cls, cfg_cls, kw = _CONFIGS[family]
    model = getattr(tf, cls)(getattr(tf, cfg_cls)(**{**kw, **common}))
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
_CONFIGS: dict[str, tuple[str, str, dict]] = {  # family: (model class, config class, config)
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"n_positions": 128, "n_embd": 32, "n_layer": 3, "n_head": 4}),
    "llama": ("LlamaForCausalLM", "LlamaConfig", {**_D, "intermediate_size": 64, "num_key_value_heads": 2}),
    "neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {**_D, "intermediate_size": 64}),
    "neox_sequential": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {**_D, "intermediate_size": 64,
                                                                "use_parallel_residual": False}),
    "bert": ("BertModel", "BertConfig", {**_D, "intermediate_size": 64}),
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
ALL_FAMILIES = list(_CONFIGS)
