"""Chain-of-thought faithfulness: does the final answer depend on the written reasoning steps?

A :class:`CoTTrace` is a reasoning trace written as steps (sentences joined by ``sep``) followed
by an answer prompt (``" A:"``); the answer is the model's next token there. Two readings:

(a) **Attribution of each token to the answer**, in nats of the answer's log-probability at
    the final position, by one of two methods (``attribution=``):

    - ``"occlusion"`` (default): ``log p(answer) - log p(answer | token t's embedding zeroed)``,
      the position embedding kept; all tokens occluded in one batched forward. Causal, one
      token at a time.
    - ``"grad_x_input"``: ``sum_d e[t, d] * d log p(answer) / d e[t, d]`` on the token
      embeddings ``e`` (the embedding layer's output, before position embeddings are added
      inside the model). A first-order estimate; saturates when ``p(answer)`` is near 1 (measured
      on zoo:tiny's two-hop traces: it ranks the step's city token first in 47% of them, where
      occlusion does in 89%).

    Step scores are the sums over each step's tokens.
(b) **Faithfulness by editing the text**: each step is removed (``"remove"``), and replaced by
    a corrupted version where the trace supplies one (``"corrupt"``); for each edit we record
    the new top-1 answer, whether it changed, whether it is the answer a model that *follows
    the edited step* would give (``follows``, when the trace says what that is), and the change
    in the original answer's log-probability. A step the answer depends on changes it; a step
    the answer ignores does not.

:func:`cot_faithfulness` runs both over one trace or many and returns a :class:`CoTResult`
(per-edit rows, per-step summary, per-token attributions). :func:`two_hop_traces` builds
zoo:tiny's planted two-hop lookups as traces (question, premise, lookup step, optional filler);
:func:`generate_trace` lets the model write the reasoning itself (zoo:tiny writes the lookup
step on its own when given the question and premise).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model, check_str_list
from ..metrics import token_id
from ..model import Model
from ..model.remote import require_local

EDITS = ("remove", "corrupt")


@dataclass
class CoTTrace:
    """A written reasoning trace. ``text = sep.join(steps) + answer_prompt``.

    ``labels``: a name per step (``"question"``, ``"lookup"``, ...; default ``"step i"``);
    ``answer``: the expected answer (one token, e.g. ``" Paris"``; default: the model's top-1);
    ``corruptions``: step index → replacement text; ``corrupt_answers``: step index → the
    answer a model that follows the corrupted step gives (one token)."""

    steps: list[str]
    answer_prompt: str = " A:"
    answer: str | None = None
    labels: list[str] | None = None
    corruptions: dict[int, str] = field(default_factory=dict)
    corrupt_answers: dict[int, str] = field(default_factory=dict)
    sep: str = " "

    def __post_init__(self) -> None:
        self.steps = list(self.steps)
        if not self.steps:
            raise ValueError("a CoTTrace needs at least one step")
        for i, s in enumerate(self.steps):
            if not isinstance(s, str) or not s:
                raise ValueError(f"steps[{i}] must be a non-empty str, got {s!r}")
        if self.labels is None:
            self.labels = [f"step {i}" for i in range(len(self.steps))]
        self.labels = list(self.labels)
        if len(self.labels) != len(self.steps):
            raise ValueError(f"labels has {len(self.labels)} entries but there are {len(self.steps)} steps")
        for what, d in (("corruptions", self.corruptions), ("corrupt_answers", self.corrupt_answers)):
            for i in d:
                if not (isinstance(i, int) and 0 <= i < len(self.steps)):
                    raise ValueError(f"{what} key {i!r} is not a step index (0..{len(self.steps) - 1})")

    @property
    def text(self) -> str:
        return self.sep.join(self.steps) + self.answer_prompt

    def edited(self, i: int, edit: str) -> str:
        """The trace's text with step ``i`` removed or corrupted."""
        steps = list(self.steps)
        if edit == "remove":
            del steps[i]
        elif edit == "corrupt":
            steps[i] = self.corruptions[i]
        else:
            raise ValueError(f"edit must be one of {EDITS}, got {edit!r}")
        return self.sep.join(steps) + self.answer_prompt

    def step_spans(self) -> list[tuple[int, int]]:
        """Character span ``[start, end)`` of each step in :attr:`text`."""
        out, pos = [], 0
        for s in self.steps:
            out.append((pos, pos + len(s)))
            pos += len(s) + len(self.sep)
        return out


def _sentences(text: str) -> list[str]:
    import re

    return [x for x in re.split(r"(?<=[.?!])\s+", text.strip()) if x]


def generate_trace(
    model: Model,
    prompt: str,
    *,
    answer_prompt: str = " A:",
    max_new_tokens: int = 40,
    corruptions: dict[int, str] | None = None,
    corrupt_answers: dict[int, str] | None = None,
) -> CoTTrace:
    """Let the model write its own reasoning: greedy continuation of ``prompt`` up to
    ``answer_prompt``; the prompt's and the generated text's sentences become the steps (labels
    ``"given i"`` / ``"generated i"``) and the token after ``answer_prompt`` the answer.
    Raises ``ValueError`` if the model never writes ``answer_prompt``."""
    check_model(model)
    require_local(
        model, "generate_trace",
        "it runs transformers' generate and torch hooks on the model; use steer_generate or "
        "patchscope (run remotely) or load the model without remote",
    )
    if not model.causal:
        raise ValueError(f"{model.name} ({model.family}) is not a causal language model; it generates no trace")
    ids = model.to_tokens(prompt)
    if ids.shape[1] + max_new_tokens > model.n_ctx:
        raise ValueError(f"prompt + max_new_tokens exceeds {model.name}'s context of {model.n_ctx}")
    with torch.no_grad():
        out = model.hf.generate(
            ids.to(model.device), attention_mask=torch.ones_like(ids).to(model.device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1]:].tolist()
    eos = model.tokenizer.eos_token_id
    if eos in new:
        new = new[: new.index(eos)]
    text = model.tokenizer.decode(new)
    if answer_prompt not in text:
        raise ValueError(f"the model did not write {answer_prompt!r} within {max_new_tokens} tokens: {text!r}")
    reasoning, after = text.split(answer_prompt, 1)
    given, written = _sentences(prompt), _sentences(reasoning)
    if not written:
        raise ValueError(f"the model wrote no reasoning before {answer_prompt!r}: {text!r}")
    after_ids = model.tokenizer(after, add_special_tokens=False)["input_ids"]
    answer = model.tokenizer.decode(after_ids[:1]) if after_ids else None
    return CoTTrace(
        given + written, answer_prompt, answer,
        [f"given {i}" for i in range(len(given))] + [f"generated {i}" for i in range(len(written))],
        dict(corruptions or {}), dict(corrupt_answers or {}),
    )


def two_hop_traces(n: int | None = None, *, filler: bool = False, seed: int = 0) -> list[CoTTrace]:
    """zoo:tiny's two-hop lookups as traces: ``question`` ("Q: Where is Anna's favourite
    place?"), ``premise`` ("Anna likes the Eiffel Tower."), ``lookup`` ("The Eiffel Tower is in
    Paris.") and, with ``filler=True``, a neutral ``filler`` sentence after the lookup; answer
    prompt ``" A:"``. Corruptions: the lookup states another city (the model should follow it),
    the premise names another place (the lookup still states the answer), the question asks
    about another person, the filler is another filler sentence. ``n``: the first n of the 70
    facts."""
    from ...zoo import corpus

    ex = corpus.two_hop_examples("step", seed=seed)
    cor = corpus.two_hop_examples("corrupt_step", seed=seed)
    rng = random.Random(f"cot-{seed}")
    out = []
    for i, (e, c) in enumerate(zip(ex, cor)):
        if n is not None and i >= n:
            break
        person, subj = e["person"], e["subject"]
        other_person = rng.choice([p for p in corpus.PEOPLE if p != person])
        other_subj = ex[(i + 7) % len(ex)]["subject"]
        steps = [
            f"Q: Where is {person}'s favourite place?",
            f"{person} likes {subj}.",
            corpus.render(corpus.TRAIN_TEMPLATES[0], subj, e["step_city"]),
        ]
        labels = ["question", "premise", "lookup"]
        corruptions = {
            0: f"Q: Where is {other_person}'s favourite place?",
            1: f"{person} likes {other_subj}.",
            2: corpus.render(corpus.TRAIN_TEMPLATES[0], subj, c["step_city"]),
        }
        if filler:
            steps.append(corpus._filler(rng))
            labels.append("filler")
            corruptions[3] = corpus._filler(rng)
        out.append(
            CoTTrace(steps, " A:", e["answer"], labels, corruptions, {2: " " + c["step_city"]})
        )
    return out


# ------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------


@dataclass
class CoTResult:
    """Faithfulness of one or more traces.

    ``rows``: one dict per (trace, step, edit): ``trace, step, label, edit, answer, new_answer,
    changed, correct, follows (None when the trace gives no corrupt answer), delta_logp`` (nats,
    edited minus original log-probability of the original answer).
    ``baseline``: per trace ``{answer, top1, correct, logp}``. ``token_attr``: per trace each token's
    attribution to the answer ``[T]`` (method in ``attribution``); ``tokens``/``token_step``: token strings and the step
    each belongs to (``-1`` BOS, ``len(steps)`` the answer prompt)."""

    model_name: str
    traces: list[CoTTrace]
    rows: list[dict]
    baseline: list[dict]
    tokens: list[list[str]]
    token_step: list[list[int]]
    token_attr: list[torch.Tensor]
    model: Model | None = field(default=None, repr=False, compare=False)
    attribution: str | None = "occlusion"

    def step_attr(self, trace: int = 0) -> list[float]:
        """Sum of the token attributions over each step of trace ``trace``."""
        a, s = self.token_attr[trace], torch.tensor(self.token_step[trace])
        return [float(a[s == i].sum()) for i in range(len(self.traces[trace].steps))]

    def to_pandas(self) -> Any:
        """Tidy table of the edits (see ``rows``)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self) -> Any:
        """Per step label and edit: ``changed`` (fraction of answers that changed), ``accuracy``
        (fraction still equal to the expected answer), ``follows`` (fraction giving the answer the
        edited step implies), ``delta_logp`` (mean), ``n``; plus the ``baseline`` row."""
        import pandas as pd

        df = self.to_pandas()
        g = df.groupby(["label", "edit"], sort=False)
        out = pd.DataFrame(
            {
                "changed": g["changed"].mean(),
                "accuracy": g["correct"].mean(),
                "follows": g["follows"].apply(lambda s: s.dropna().astype(float).mean() if s.notna().any() else float("nan")),
                "delta_logp": g["delta_logp"].mean(),
                "n": g.size(),
            }
        ).reset_index()
        base = pd.DataFrame(
            [{"label": "(none)", "edit": "baseline", "changed": 0.0,
              "accuracy": sum(b["correct"] for b in self.baseline) / len(self.baseline),
              "follows": float("nan"), "delta_logp": 0.0, "n": len(self.baseline)}]
        )
        return pd.concat([base, out], ignore_index=True)

    def rate(self, label: str, edit: str, what: str = "changed") -> float:
        """One cell of :meth:`summary`: e.g. ``rate("lookup", "corrupt", "follows")``."""
        s = self.summary()
        hit = s[(s["label"] == label) & (s["edit"] == edit)]
        if hit.empty:
            raise ValueError(f"no {edit!r} edits of steps labelled {label!r}; labels: {sorted(set(s['label']))}")
        return float(hit[what].iloc[0])

    def plot(self, ax: Any = None) -> Any:
        """Bars: fraction of answers changed by each edit of each step label."""
        import matplotlib.pyplot as plt

        s = self.summary()
        s = s[s["edit"] != "baseline"]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        names = [f"{lab}\n{e}" for lab, e in zip(s["label"], s["edit"])]
        ax.bar(names, s["changed"].tolist(), color=["#b2431f" if v > 0.5 else "#1f6fb2" for v in s["changed"]])
        ax.set_ylim(0, 1)
        ax.set_ylabel("answer changed (fraction)")
        ax.set_title(f"CoT faithfulness ({len(self.traces)} traces)")
        ax.figure.tight_layout()
        return ax.figure

    def widget(self, **kwargs: Any) -> Any:
        """Every trace's tokens coloured by their gradient × input attribution to the answer
        (the TokenActivations view with the attribution as its one-unit colouring)."""
        from ..decomposition.activations import TokenActivationsResult

        # site/layer are placeholders: the values are attributions, not a site's activations
        # (the view has no model, so it cannot switch site or layer).
        res = TokenActivationsResult(
            model_name=self.model_name,
            site="mlp_post",
            layer=0,
            texts=[t.text for t in self.traces],
            str_tokens=[list(t) for t in self.tokens],
            token_ids=[[0] * len(t) for t in self.tokens],
            acts=torch.cat(self.token_attr).float()[:, None],
            direction=torch.ones(1),
            direction_label=f"{self.attribution} → log p(answer), nats",
            model=None,
        )
        return res.widget(**kwargs)


# ------------------------------------------------------------------------------------------
# Computation
# ------------------------------------------------------------------------------------------


def _last_logp(model: Model, text: str) -> torch.Tensor:
    ids = model.to_tokens(text).to(model.device)
    with torch.no_grad():
        logits = model.hf(ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    return torch.log_softmax(logits, -1)


def grad_x_input(model: Model, text: str, answer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attribution [T], log p(answer))``: gradient × input on the input token embeddings of
    the answer's log-probability at the final position, in nats (plain torch autograd through
    ``inputs_embeds``; the model's parameters are untouched)."""
    ids = model.to_tokens(text).to(model.device)
    emb_layer = model.hf.get_input_embeddings()
    with torch.no_grad():
        emb = emb_layer(ids)
    emb = emb.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.hf(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
        logp = torch.log_softmax(logits, -1)[answer_id]
        (grad,) = torch.autograd.grad(logp, emb)
    return (grad * emb).sum(-1)[0].detach().float().cpu(), logp.detach().float().cpu()


def occlusion(model: Model, text: str, answer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attribution [T], log p(answer))``: for each token, the drop in the answer's
    log-probability when that token's input embedding is zeroed (position embeddings kept), in
    nats; the special BOS token gets 0. One forward on a batch of ``T + 1`` sequences."""
    ids = model.to_tokens(text).to(model.device)
    emb_layer = model.hf.get_input_embeddings()
    with torch.no_grad():
        e = emb_layer(ids)[0]
        t = e.shape[0]
        batch = e.repeat(t + 1, 1, 1)
        idx = torch.arange(t, device=e.device)
        batch[idx + 1, idx] = 0.0
        logits = model.hf(inputs_embeds=batch, attention_mask=torch.ones(t + 1, t, dtype=torch.long, device=e.device)).logits[:, -1].float()
        lp = torch.log_softmax(logits, -1)[:, answer_id].cpu()
    attr = lp[0] - lp[1:]
    special = set(model.tokenizer.all_special_ids)
    for i, tok in enumerate(ids[0].tolist()):
        if tok in special and i == 0:
            attr[i] = 0.0
    return attr, lp[0]


def _token_steps(model: Model, trace: CoTTrace) -> tuple[list[str], list[int]]:
    """Token strings of the trace and the step each token belongs to (by the character its
    last byte comes from; ``-1`` for special tokens, ``len(steps)`` for the answer prompt)."""
    text = trace.text
    enc = model.tokenizer(text, return_offsets_mapping=True)
    ids, offs = enc["input_ids"], enc["offset_mapping"]
    spans = trace.step_spans()
    steps = []
    for (a, b) in offs:
        if b <= a:
            steps.append(-1)
            continue
        c = b - 1
        k = next((i for i, (s, e) in enumerate(spans) if s <= c < e), None)
        if k is None:  # a separator: give it to the next step (a leading space)
            k = next((i for i, (s, _) in enumerate(spans) if c < s), len(spans))
        steps.append(k)
    return [model.token_str(i) for i in ids], steps


def cot_faithfulness(
    model: Model,
    traces: CoTTrace | Sequence[CoTTrace],
    *,
    edits: Sequence[str] = EDITS,
    attribution: str | None = "occlusion",
    progress: bool = True,
) -> CoTResult:
    """Edit every step of every trace (``edits``: ``"remove"``, ``"corrupt"`` where the trace
    gives a corruption) and record whether the answer changes; with ``attribution=True`` also
    the gradient × input of every token (see the module docstring). One forward per edited text,
    one forward + backward per trace for attribution. Answers and corrupt answers must each be one
    token (checked before any forward pass)."""
    check_model(model)
    require_local(
        model, "cot_faithfulness",
        "it runs transformers' generate and torch hooks on the model; use steer_generate or "
        "patchscope (run remotely) or load the model without remote",
    )
    if not model.causal:
        raise ValueError(f"{model.name} ({model.family}) is not a causal language model; it writes no answer")
    trs = [traces] if isinstance(traces, CoTTrace) else list(traces)
    if not trs or not all(isinstance(t, CoTTrace) for t in trs):
        raise ValueError("traces must be a CoTTrace or a non-empty list of CoTTrace")
    if attribution not in (None, "occlusion", "grad_x_input"):
        raise ValueError(f"attribution must be 'occlusion', 'grad_x_input' or None, got {attribution!r}")
    check_str_list(edits, "edits")
    for e in edits:
        if e not in EDITS:
            raise ValueError(f"edits must be drawn from {EDITS}, got {e!r}")
    # validate everything before any forward
    answers = [token_id(model, t.answer, role="answer") if t.answer is not None else None for t in trs]
    corrupt_ids = [{i: token_id(model, a, role=f"corrupt_answers[{i}]") for i, a in t.corrupt_answers.items()} for t in trs]
    for t in trs:
        model.to_tokens(t.text)
        for i in t.corruptions:
            if "corrupt" in edits:
                model.to_tokens(t.edited(i, "corrupt"))

    from tqdm.auto import tqdm

    dec = model.tokenizer.decode
    rows: list[dict] = []
    baseline: list[dict] = []
    tokens, token_step, attrs = [], [], []
    for ti, t in enumerate(tqdm(trs, desc="cot", disable=not progress or len(trs) < 8, leave=False)):
        lp = _last_logp(model, t.text)
        top1 = int(lp.argmax())
        ans = answers[ti] if answers[ti] is not None else top1
        baseline.append({"trace": ti, "answer": dec([ans]), "top1": dec([top1]), "correct": top1 == ans, "logp": float(lp[ans])})
        if attribution is not None:
            a, _ = (occlusion if attribution == "occlusion" else grad_x_input)(model, t.text, ans)
            toks, st = _token_steps(model, t)
            tokens.append(toks)
            token_step.append(st)
            attrs.append(a)
        for i in range(len(t.steps)):
            for e in edits:
                if e == "corrupt" and i not in t.corruptions:
                    continue
                if e == "remove" and len(t.steps) == 1:
                    continue
                elp = _last_logp(model, t.edited(i, e))
                new = int(elp.argmax())
                follows = (new == corrupt_ids[ti][i]) if (e == "corrupt" and i in corrupt_ids[ti]) else None
                rows.append(
                    {
                        "trace": ti, "step": i, "label": t.labels[i], "edit": e,  # type: ignore[index]
                        "answer": dec([ans]), "new_answer": dec([new]), "changed": new != top1,
                        "correct": new == ans, "follows": follows, "delta_logp": float(elp[ans] - lp[ans]),
                    }
                )
    return CoTResult(model.name, trs, rows, baseline, tokens, token_step, attrs, model, attribution)


__all__ = ["EDITS", "CoTResult", "CoTTrace", "cot_faithfulness", "generate_trace", "grad_x_input", "occlusion", "two_hop_traces"]
