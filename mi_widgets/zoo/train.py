"""Train the ``tiny`` zoo model: tokenizer + 4-layer GPT-2 on the seeded corpus of ``corpus.py``.

    python -m mi_widgets.zoo.train [--out DIR] [--steps N] [--minutes N]

Deterministic: the corpus, the tokenizer (byte-level BPE) and the weights depend only on the
seed and the step count (fixed seed, ``torch.set_num_threads(2)``,
``torch.use_deterministic_algorithms(True)``, single process, CPU). Two runs on the same
machine and torch version give byte-identical ``model.safetensors``. ``--minutes`` is only a
wall-clock safety cap: if it is hit, training stops early with a warning and the weights are
not the canonical ones.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from mi_widgets.zoo import corpus

DEFAULT_OUT = Path(__file__).parent / "models" / "tiny"

# The recipe (recorded in training.json and docs/zoo.md).
RECIPE = {
    "seed": corpus.SEED,
    "n_rows": corpus.N_ROWS,
    "vocab_size_target": 1500,
    "n_layer": 4,
    "n_embd": 128,
    "n_head": 4,
    "n_inner": 512,
    "n_positions": 128,
    "initializer_range": 0.1,
    "wpe_init": "sinusoid * 0.1",
    "steps": 3500,
    "batch_size": 64,
    "bucket_batches": 8,
    "lr": 2e-3,
    "min_lr_ratio": 0.1,
    "warmup": 150,
    "weight_decay": 0.01,
    "betas": [0.9, 0.98],
    "grad_clip": 1.0,
    "threads": 1,
}


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def build_tokenizer(rows: list[str], vocab_size: int = RECIPE["vocab_size_target"]):
    """Byte-level BPE trained on ``rows``; ``<|endoftext|>`` is id 0 and is prepended as BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[corpus.EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(rows, trainer)
    assert tok.token_to_id(corpus.EOT) == 0
    tok.post_processor = processors.TemplateProcessing(
        single=f"{corpus.EOT} $A",
        pair=f"{corpus.EOT} $A {corpus.EOT} $B",
        special_tokens=[(corpus.EOT, 0)],
    )
    not_single = [
        w
        for w in corpus.required_single_tokens()
        if len(tok.encode(w, add_special_tokens=False).ids) != 1
    ]
    if not_single:
        # A BPE vocab cannot take a whole word without its merges; with min_frequency=2 and
        # these words frequent in the corpus this never triggers, so fail loudly if it does.
        raise RuntimeError(f"not single tokens in the BPE vocab: {not_single}")
    return tok


def save_tokenizer(tok, out: Path, model_max_length: int) -> None:
    """Save as a Hugging Face fast tokenizer readable by transformers 4 and 5."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=corpus.EOT,
        eos_token=corpus.EOT,
        pad_token=corpus.EOT,
        model_max_length=model_max_length,
    )
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    # transformers 5 writes "TokenizersBackend", which transformers 4 cannot resolve.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def make_config(vocab_size: int):
    from transformers import GPT2Config

    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=RECIPE["n_positions"],
        n_embd=RECIPE["n_embd"],
        n_layer=RECIPE["n_layer"],
        n_head=RECIPE["n_head"],
        n_inner=RECIPE["n_inner"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=RECIPE["initializer_range"],
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    cfg._attn_implementation = "eager"
    return cfg


def sinusoid(n_pos: int, d: int) -> torch.Tensor:
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)[None, :]
    ang = pos / (10000 ** (i / d))
    out = torch.zeros(n_pos, d, dtype=torch.float64)
    out[:, 0::2] = torch.sin(ang)
    out[:, 1::2] = torch.cos(ang)
    return out.float()


def init_model(vocab_size: int, seed: int):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(make_config(vocab_size))
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(0.1 * sinusoid(*model.transformer.wpe.weight.shape))
    return model


def _encode_rows(tok, rows: list[str], n_positions: int) -> list[list[int]]:
    encs = tok.encode_batch(rows)  # post-processor prepends BOS (id 0)
    ids = [e.ids + [0] for e in encs]  # and EOS (also id 0) closes every row
    longest = max(len(x) for x in ids)
    if longest > n_positions:
        raise ValueError(f"a row has {longest} tokens > n_positions={n_positions}")
    return ids


def _bucketed_batches(lengths: torch.Tensor, bs: int, k: int, gen: torch.Generator):
    """``k`` batches from ``k * bs`` random rows sorted by length (less padding), in random order."""
    idx = torch.randint(len(lengths), (k * bs,), generator=gen)
    idx = idx[torch.argsort(lengths[idx], stable=True)]
    batches = list(idx.view(k, bs))
    order = torch.randperm(k, generator=gen).tolist()
    return [batches[i] for i in order]


def _lr(step: int, steps: int) -> float:
    r = RECIPE
    if step < r["warmup"]:
        return r["lr"] * (step + 1) / r["warmup"]
    t = (step - r["warmup"]) / max(1, steps - r["warmup"])
    return r["lr"] * (
        r["min_lr_ratio"] + (1 - r["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * t))
    )


def train(
    out: Path = DEFAULT_OUT,
    steps: int = RECIPE["steps"],
    minutes: float | None = 30.0,
    progress: bool = True,
    threads: int = RECIPE["threads"],
) -> dict:
    """Build corpus, tokenizer and model; train; save into ``out``. Returns the training log."""
    from tqdm.auto import tqdm

    r = RECIPE
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    rows = corpus.training_rows(seed=r["seed"], n_rows=r["n_rows"])
    tok = build_tokenizer(rows, r["vocab_size_target"])
    vocab_size = tok.get_vocab_size()
    ids = _encode_rows(tok, rows, r["n_positions"])
    lengths = torch.tensor([len(x) for x in ids])
    data = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for i, x in enumerate(ids):
        data[i, : len(x)] = torch.tensor(x)

    model = init_model(vocab_size, r["seed"])
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": r["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=r["lr"],
        betas=tuple(r["betas"]),
    )
    gen = torch.Generator().manual_seed(r["seed"])
    losses = []
    done = 0
    deadline = None if minutes is None else t0 + 60 * minutes
    bar = tqdm(range(steps), desc="training tiny", disable=not progress, mininterval=1.0)
    ema = None
    queue: list[torch.Tensor] = []
    for step in bar:
        if not queue:
            queue = _bucketed_batches(lengths, r["batch_size"], r["bucket_batches"], gen)
        idx = queue.pop()
        L = int(lengths[idx].max())
        x = data[idx, :L]
        mask = torch.arange(L)[None, :] < lengths[idx][:, None]
        labels = x.masked_fill(~mask, -100)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps)
        loss = model(input_ids=x, attention_mask=mask.long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 100 == 0 or step == steps - 1:
            losses.append([step, round(lv, 4)])
        bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
        done = step + 1
        if deadline is not None and time.perf_counter() > deadline:
            print(
                f"WARNING: --minutes cap hit after {done}/{steps} steps; "
                "these weights are NOT the canonical recipe"
            )
            break
    bar.close()
    train_s = time.perf_counter() - t0

    model.eval()
    model.config._attn_implementation = "eager"
    model.save_pretrained(str(out), safe_serialization=True)
    _force_eager_in_config(out / "config.json")
    save_tokenizer(tok, out, r["n_positions"])
    log = {
        "recipe": r,
        "steps_done": done,
        "vocab_size": vocab_size,
        "n_rows": len(rows),
        "train_seconds": round(train_s, 1),
        "loss_every_100_steps": losses,
        "torch": torch.__version__,
        "command": "python -m mi_widgets.zoo.train",
    }
    (out / "training.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    return log


def _force_eager_in_config(path: Path) -> None:
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["attn_implementation"] = "eager"
    cfg.pop("_attn_implementation_autoset", None)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--steps", type=int, default=RECIPE["steps"], help="optimizer steps")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock cap (safety only)")
    p.add_argument("--threads", type=int, default=RECIPE["threads"], help="torch CPU threads")
    a = p.parse_args(argv)
    log = train(a.out, steps=a.steps, minutes=a.minutes, threads=a.threads)
    print(
        f"saved to {a.out}: {log['steps_done']} steps in {log['train_seconds']} s, "
        f"vocab {log['vocab_size']}, final loss {log['loss_every_100_steps'][-1][1]}"
    )


if __name__ == "__main__":
    main()
