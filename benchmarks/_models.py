"""The benchmark model: gpt2-small's shape (GPT2Config defaults: 12 layers, d_model 768, vocab
50257), random init with seed 0, eager attention, float32, no download; with a word-level
tokenizer that maps "t<id>" to id, so a prompt of P words is exactly P tokens."""

from __future__ import annotations

import torch


def build_model():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = GPT2Config()
    cfg._attn_implementation = "eager"
    hf = GPT2LMHeadModel(cfg).eval()
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t0")
    return hf, tok
