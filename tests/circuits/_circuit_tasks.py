"""Circuit tasks on the compiled zoo models (ground truth by construction) and a tiny random GPT-2.

Fixtures live here (not in a conftest.py) and are imported by each test module, so that no
second module named `conftest` shadows tests/conftest.py for `from conftest import ...`."""

from __future__ import annotations

import random

import pytest
import torch

# The IOI circuit planted in zoo:ioi (docs/zoo_compiled.md; mi_widgets/zoo/compiled.py), as
# edges that carry a signal the ABC corruption changes (a name's identity or a flag computed
# from it). test_planted_edges_follow_the_weights checks each against the weights: the receiver
# reads (W_Q/W_K/W_V columns or lm_head) a residual block that the sender writes.
IOI_PLANTED = [
    "input->a0.h1<q>",  # duplicate-token head matches name identities (tok) ...
    "input->a0.h1<k>",  # ... query and key
    "a0.h1->a1.h2<k>",  # S-inhibition key = the dup flag written by 0.1
    "input->a1.h2<v>",  # S-inhibition copies S's identity (tok)
    "a1.h2->a2.h3<q>",  # name mover query reads 'inhib'
    "input->a2.h3<k>",  # name mover keys: the names (tok)
    "input->a2.h3<v>",  # name mover copies the attended name (tok)
    "a2.h3->logits",  # 'answer' block read by lm_head
]
IOI_DECOYS = ["0.0", "0.2", "0.3", "1.0", "1.1", "1.3", "2.0", "2.1", "2.2"]


def is_decoy_edge(edge: str) -> bool:
    nodes = edge.split("<")[0].split("->")
    return any(n == f"a{d.split('.')[0]}.h{d.split('.')[1]}" for n in nodes for d in IOI_DECOYS)


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(|score| of a planted edge > |score| of another edge), ties count one half."""
    s = torch.nan_to_num(scores.abs().double(), nan=0.0)
    p, n = s[positive], s[~positive]
    gt = (p[:, None] > n[None, :]).double().mean()
    eq = (p[:, None] == n[None, :]).double().mean()
    return float(gt + 0.5 * eq)


@pytest.fixture(scope="session")
def ioi_model():
    import mi_widgets as mw

    return mw.load("zoo:ioi")


@pytest.fixture(scope="session")
def ioi_task():
    """8 IOI prompts (both orders, 8 templates) and their ABC corruption: the same template with
    three other names, so no name repeats (no dup flag, no S-inhibition) and neither IO nor S
    appears: logit_diff(IO, S) is 10 clean and 0 corrupt."""
    import mi_widgets as mw
    from mi_widgets.zoo import compiled

    ps = compiled.ioi_prompts(8, seed=1)
    rng = random.Random(0)
    clean, corrupt = [], []
    for p in ps:
        others = [n for n in compiled.IOI_NAMES if " " + n not in (p["io"], p["s"])]
        a, b, c = rng.sample(others, 3)
        clean.append(p["text"])
        corrupt.append(compiled.IOI_TEMPLATES[p["template"]].format(A=a, B=b, S=c))
    return clean, corrupt, mw.logit_diff([p["io"] for p in ps], [p["s"] for p in ps])


@pytest.fixture(scope="session")
def induction_model():
    import mi_widgets as mw

    return mw.load("zoo:induction")


@pytest.fixture(scope="session")
def induction_task():
    """A = 6 distinct words; clean = A + A[:3] (next word A[3] by induction), corrupt = A' + A[:3]
    with A' 6 other words (no earlier occurrence: flat logits). Metric logit_diff(A[3], A'[3])."""
    import mi_widgets as mw
    from mi_widgets.zoo import compiled

    rng = random.Random(1)
    clean, corrupt, right, wrong = [], [], [], []
    for _ in range(6):
        w = rng.sample(compiled.INDUCTION_WORDS, 12)
        a, a2 = w[:6], w[6:]
        clean.append(" ".join(a + a[:3]))
        corrupt.append(" ".join(a2 + a[:3]))
        right.append(" " + a[3])
        wrong.append(" " + a2[3])
    return clean, corrupt, mw.logit_diff(right, wrong)


@pytest.fixture(scope="session")
def small_gpt2(bpe_tokenizer):
    """A 2-layer random GPT-2 (d 32, 4 heads, non-zero biases) and prompt pairs of equal length."""
    import transformers as tf

    import mi_widgets as mw

    torch.manual_seed(0)
    cfg = tf.GPT2Config(
        n_positions=64, n_embd=32, n_layer=2, n_head=4, vocab_size=len(bpe_tokenizer),
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf = tf.GPT2LMHeadModel(cfg)
    hf.config._attn_implementation = "eager"
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
            else:
                p.mul_(4.0)  # larger weights: the model is far from linear
    model = mw.wrap(hf.eval(), bpe_tokenizer, "gpt2")
    clean = ["The Eiffel Tower is in Paris.", "The Colosseum is in Rome."]
    corrupt = ["The Colosseum Tower is in Rome.", "The Eiffel is in Paris."]
    ids = [model.to_tokens(t).shape[1] for t in clean + corrupt]
    assert ids[0] == ids[2] and ids[1] == ids[3], ids
    return model, clean, corrupt, mw.logit_diff(" Paris", " Rome")
