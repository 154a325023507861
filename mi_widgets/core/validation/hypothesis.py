"""Hypotheses about one unit (a head, a neuron, a direction, an SAE feature), turned into predictions
that can fail, and :func:`validate`, which runs them and returns a :class:`~.verdict.Verdict`.

A hypothesis is a description plus any of four testable parts:

- :class:`ActivationPrediction`: a rule ``fires(str_tokens, i)`` saying where the unit should be
  active; scored on held-out text by correlation and balanced detection accuracy, with ranked
  counterexamples both ways (the rule says fires and the unit is silent, and the reverse);
- :class:`AttentionPrediction` (heads): a rule ``attends(str_tokens, i)`` giving the key positions
  a query should attend to; scored by the attention mass they get;
- :class:`AblationPrediction`: "ablating it drops metric M on task T by at least x and leaves task U
  within y", measured with zero, mean *and* resample ablation (``core.interventions.ablation``);
  when the kinds disagree the verdict says so;
- :class:`ReplacementPrediction` (heads): the head is replaced during the forward by a user function
  of its output, or by the hand-set attention pattern of the :class:`AttentionPrediction` over its
  own values; scored by the fraction of the task metric kept (0 = zero-ablated, 1 = clean) and the
  loss change on neutral text;
- :class:`SubspacePrediction` (directions): an interchange along the direction flips the answer and
  the subspace illusion check (``illusion.py``) does not flag it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .._checks import check_model
from ..interventions.ablation import ablate
from ..interventions.batching import _groups, _progress
from ..interventions.checks import _check_lm, _check_prompts, _tokens
from ..interventions.path_patching import _head
from ..metrics import Metric, as_metric
from ..model import Model
from ._run import _check_local, _run, run_head_replaced
from .verdict import Counterexample, TestResult, Verdict

ABLATION_KINDS = ("zero", "mean", "resample")

Rule = Callable[[list[str], int], Any]


@dataclass
class PromptTask:
    """Prompts and a metric read at their final position (a :mod:`~mi_widgets.core.metrics` metric
    or a callable on logits ``[batch, vocab] -> [batch]``)."""

    prompts: list[str]
    metric: Metric | Callable[[torch.Tensor], torch.Tensor]
    name: str = "task"

    def __post_init__(self) -> None:
        self.prompts = _check_prompts(self.prompts, f"{self.name}.prompts")
        if not (isinstance(self.metric, Metric) or callable(self.metric)):
            raise TypeError(f"{self.name}.metric must be a metric or a callable on logits")


@dataclass
class ActivationPrediction:
    """``fires(str_tokens, i) -> bool | float | None``: where the unit should be active (``None``
    skips a position). The unit counts as firing where its activation exceeds ``threshold``
    (default: half its largest activation on ``corpus``)."""

    fires: Rule
    corpus: list[str]
    min_correlation: float = 0.5
    min_accuracy: float = 0.8
    threshold: float | None = None
    n_counterexamples: int = 5
    #: gradient-guided token edits (neurons, directions, SAE features on a local model): from this
    #: many agreeing positions each way, one-token edits the gradient ranks first are tried, and an
    #: edit that keeps the description's call but flips the unit is a counterexample (0: none)
    n_edit_targets: int = 3

    def __post_init__(self) -> None:
        if not callable(self.fires):
            raise TypeError("fires must be a function (str_tokens, i) -> bool")
        if isinstance(self.n_edit_targets, bool) or not isinstance(self.n_edit_targets, int) or self.n_edit_targets < 0:
            raise ValueError(f"n_edit_targets must be an int >= 0, got {self.n_edit_targets!r}")
        self.corpus = _check_prompts(self.corpus, "corpus")


@dataclass
class AttentionPrediction:
    """``attends(str_tokens, i) -> list of key positions`` (empty or ``None``: no prediction at
    query ``i``). Passes when the predicted keys get at least ``min_mass`` of the attention on
    average over the predicted queries."""

    attends: Rule
    corpus: list[str]
    min_mass: float = 0.8
    n_counterexamples: int = 5

    def __post_init__(self) -> None:
        if not callable(self.attends):
            raise TypeError("attends must be a function (str_tokens, i) -> list of key positions")
        self.corpus = _check_prompts(self.corpus, "corpus")


@dataclass
class AblationPrediction:
    """ "Ablating the unit lowers ``task``'s metric by at least ``drop_at_least`` and moves
    ``control``'s by at most ``control_within``", under each of ``kinds``. Resample ablation takes
    activations from ``reference`` (default: the other prompts of the same token length, rotated)."""

    task: PromptTask
    drop_at_least: float
    control: PromptTask | None = None
    control_within: float | None = None
    kinds: tuple[str, ...] = ABLATION_KINDS
    reference: list[str] | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in ABLATION_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be among {ABLATION_KINDS}, got {self.kinds!r}")
        if (self.control is None) != (self.control_within is None):
            raise ValueError("give control and control_within together")


@dataclass
class ReplacementPrediction:
    """Replace the head during the forward: ``replace="pattern"`` uses the hypothesis's
    :class:`AttentionPrediction` as a hand-set attention pattern (uniform over the predicted keys,
    the first position where none) over the head's own values; a callable gets the head's output
    ``z`` ``[batch, T, d_head]`` and returns its replacement. Passes when it keeps at least
    ``keep_at_least`` of the task metric (0 = the head zero-ablated, 1 = clean) and, if
    ``neutral`` text is given, raises its loss by at most ``max_loss_increase`` nats."""

    task: PromptTask
    replace: str | Callable[[torch.Tensor], torch.Tensor] = "pattern"
    keep_at_least: float = 0.9
    neutral: list[str] | None = None
    max_loss_increase: float = 0.1

    def __post_init__(self) -> None:
        if not (self.replace == "pattern" or callable(self.replace)):
            raise ValueError("replace must be 'pattern' or a function of the head's output")
        if self.neutral is not None:
            self.neutral = _check_prompts(self.neutral, "neutral")


@dataclass
class SubspacePrediction:
    """Directions only: "the direction carries ``dataset``'s concept the way the model uses it".
    Tested by an interchange along it (IIA >= ``min_iia``: patching the direction from a source of
    the other class flips the answer to the source's) and by the illusion check
    (:func:`~.illusion.illusion_check`: some part of the direction must carry the effect on its
    own, not only the combination of an unread part and a dormant one)."""

    dataset: Any
    answers: tuple[str, str] | None = None
    min_iia: float = 0.8
    n_pairs: int = 100
    drop: float = 0.3

    def __post_init__(self) -> None:
        from ..concepts.probes import ProbeDataset

        if not isinstance(self.dataset, ProbeDataset):
            raise TypeError(f"dataset must be a ProbeDataset (two classes), got {type(self.dataset).__name__}")
        for name in ("min_iia", "drop"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < float(x) <= 1:
                raise ValueError(f"{name} must be a number in (0, 1], got {x!r}")


@dataclass
class Hypothesis:
    """A description of one unit with optional testable parts (see the module docstring).

    ``unit``: a head ``"L.H"``; a neuron ``("mlp_post", L, i)``; a direction ``(site, L, vector)``
    (activation = projection on the unit vector); an SAE feature ``(sae, i)``."""

    unit: Any
    description: str
    activation: ActivationPrediction | None = None
    attention: AttentionPrediction | None = None
    ablation: AblationPrediction | None = None
    replacement: ReplacementPrediction | None = None
    subspace: SubspacePrediction | None = None
    circuit: Any = None  # a CircuitPrediction (validation/circuit.py) when the unit is a Circuit
    model: Model | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError("description must be a non-empty string")
        from .circuit import CircuitPrediction, _is_circuit

        if _is_circuit(self.unit):
            if self.circuit is None:
                self.circuit = CircuitPrediction()
            if not isinstance(self.circuit, CircuitPrediction):
                raise TypeError(f"circuit= must be a CircuitPrediction, got {type(self.circuit).__name__}")
            others = [n for n in ("activation", "attention", "ablation", "replacement", "subspace") if getattr(self, n) is not None]
            if others:
                raise ValueError(f"a circuit hypothesis is tested by circuit=; {', '.join(others)} are about single units")
            return
        if self.circuit is not None:
            raise ValueError("circuit= tests a Circuit; give the Circuit as the unit: Hypothesis(circuit, description, circuit=...)")
        if not any((self.activation, self.attention, self.ablation, self.replacement, self.subspace)):
            raise ValueError(
                "a hypothesis needs at least one testable part: activation=, attention=, "
                "ablation=, replacement=, subspace= (or a Circuit as the unit)"
            )
        if self.replacement is not None and self.replacement.replace == "pattern":
            if self.attention is None:
                raise ValueError(
                    "replacement='pattern' uses the hypothesis's attention prediction; give attention="
                )


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    kind: str  # head | neuron | direction | feature
    label: str
    layer: int
    index: int = 0
    site: str = ""
    vector: torch.Tensor | None = None
    sae: Any = None


def _parse_unit(model: Model, unit: Any) -> _Unit:
    if isinstance(unit, str):
        layer, h = _head(model, unit, "unit")
        return _Unit("head", f"{layer}.{h}", layer, h, "head_out")
    if isinstance(unit, tuple) and len(unit) == 2 and hasattr(unit[0], "encode"):
        sae, i = unit
        model.check_site(sae.site, sae.layer)
        if getattr(sae, "d_in", model.site_width(sae.site)) != model.site_width(sae.site):
            raise ValueError(
                f"the SAE reads {sae.d_in} dims but {sae.site} has {model.site_width(sae.site)}"
            )
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < sae.d_sae:
            raise ValueError(f"SAE feature index must be an int in 0..{sae.d_sae - 1}, got {i!r}")
        return _Unit(
            "feature", f"feature {i} ({sae.site}.{sae.layer})", sae.layer, i, sae.site, sae=sae
        )
    if isinstance(unit, tuple) and len(unit) == 3 and isinstance(unit[0], str):
        site, layer, x = unit
        model.check_site(site, layer)
        if isinstance(x, int) and not isinstance(x, bool):
            width = model.site_width(site)
            if not 0 <= x < width:
                raise ValueError(f"unit {unit!r}: index {x} out of range 0..{width - 1}")
            return _Unit("neuron", f"{site}.{layer}[{x}]", layer, x, site)
        v = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
        if v.numel() != model.site_width(site) or float(v.norm()) == 0:
            raise ValueError(
                f"direction at {site} must be a non-zero vector of {model.site_width(site)} numbers"
            )
        return _Unit("direction", f"direction at {site}.{layer}", layer, 0, site, v / v.norm())
    raise ValueError(
        f"cannot read unit {unit!r}: use a head 'L.H', a neuron ('mlp_post', L, i), a direction "
        "(site, L, vector) or an SAE feature (sae, i)"
    )


def _activations(model: Model, u: _Unit, ids: torch.Tensor) -> torch.Tensor:
    """The unit's activation at each position of ``ids`` ``[1, T]``: ``[T]`` (a head: the norm of
    its write into the residual stream)."""
    if u.kind == "head":
        w = model.run(ids, [("head_out", u.layer)])[("head_out", u.layer)]
        return w[:, u.index].norm(dim=-1)
    x = model.run(ids, [(u.site, u.layer)])[(u.site, u.layer)]
    if u.kind == "neuron":
        return x[:, u.index]
    if u.kind == "direction":
        assert u.vector is not None
        return x @ u.vector
    p = next(u.sae.parameters())
    with torch.no_grad():
        return u.sae.encode(x.to(p.device, p.dtype))[:, u.index].float().cpu()


def _context(toks: list[str], i: int, width: int = 6) -> str:
    left = "".join(toks[max(0, i - width) : i])
    right = "".join(toks[i + 1 : i + 1 + width])
    return f"{left}[[{toks[i]}]]{right}"


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def _test_activation(model: Model, u: _Unit, p: ActivationPrediction) -> list[TestResult]:
    preds, acts, where = [], [], []
    for ti, text in enumerate(p.corpus):
        ids = model.to_tokens(text)
        toks = model.to_str_tokens(ids)
        a = _activations(model, u, ids)
        for i in range(len(toks)):
            y = p.fires(toks, i)
            if y is None:
                continue
            preds.append(float(y))
            acts.append(float(a[i]))
            where.append((ti, i, toks))
    if not preds:
        raise ValueError("fires returned None at every position of the corpus: nothing to test")
    pr, ac = torch.tensor(preds), torch.tensor(acts)
    thr = p.threshold if p.threshold is not None else 0.5 * float(ac.max())
    fired, said = ac > thr, pr > 0.5
    rates = [float((said[m] == fired[m]).float().mean()) for m in (fired, ~fired) if m.any()]
    bal_acc = sum(rates) / len(rates)
    corr = _pearson(pr, ac)
    ces: list[Counterexample] = []
    for kind, mask, order in (
        ("predicted, silent", said & ~fired, ac),
        ("silent prediction, fires", ~said & fired, -ac),
    ):
        idx = torch.nonzero(mask).reshape(-1)
        idx = idx[torch.argsort(order[idx])][: p.n_counterexamples]
        for j in idx.tolist():
            ti, i, toks = where[j]
            ces.append(Counterexample(kind, ti, i, toks[i], _context(toks, i), acts[j], preds[j]))
    if p.n_edit_targets and u.kind in ("neuron", "direction", "feature") and not model.remote:
        for kind, mask, key in (("predicted, silent", said & fired, ac), ("silent prediction, fires", ~said & ~fired, -ac)):
            idx = torch.nonzero(mask).reshape(-1)
            idx = idx[torch.argsort(key[idx])][: p.n_edit_targets]  # nearest the threshold first
            found = [ce for j in idx.tolist() for ce in _edit_counterexamples(model, u, p, where[j], thr, kind)]
            found.sort(key=lambda c: c.activation if kind == "predicted, silent" else -c.activation)
            ces += found[: p.n_counterexamples]
    detail = {"activation_threshold": thr, "n_positions": len(preds),
              "n_predicted": int(said.sum()), "n_fired": int(fired.sum())}  # fmt: skip
    return [
        TestResult("activation: correlation", corr, p.min_correlation, ">=",
                   corr >= p.min_correlation, "r", detail),
        TestResult("activation: detection accuracy", bal_acc, p.min_accuracy, ">=",
                   bal_acc >= p.min_accuracy, "balanced acc", detail, ces),
    ]  # fmt: skip


def _unit_grad(model: Model, u: _Unit, ids: torch.Tensor, i: int) -> torch.Tensor:
    """``d activation[i] / d token embedding`` ``[T, d_embed]`` by plain torch hooks (one forward
    and one backward): the embedding output is made a leaf, the unit's site is read in place."""
    from ..model import _get

    emb = _get(model.hf, model.arch.embed)
    r = model.arch.reads[u.site]
    block = _get(model.hf, model.arch.layers)[u.layer]
    mod = _get(block, r.module) if r.module else block
    store: dict[str, torch.Tensor] = {}

    def leaf(_m: Any, _a: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.detach().requires_grad_(True)
        store["e"] = out
        return out

    def grab(x: Any) -> None:
        store["x"] = x[0] if isinstance(x, tuple) else x

    hooks = [emb.register_forward_hook(leaf)]
    if r.io == "input":
        hooks.append(mod.register_forward_pre_hook(lambda _m, a, k: grab(a[0] if a else next(iter(k.values()))), with_kwargs=True))
    else:
        hooks.append(mod.register_forward_hook(lambda _m, _a, out: grab(out)))
    try:
        with torch.enable_grad():
            ids = ids.to(model.device)
            model.hf(ids, attention_mask=torch.ones_like(ids))
            x = store["x"][0, i].float()
            if u.kind == "neuron":
                a = x[u.index]
            elif u.kind == "direction":
                a = x @ u.vector.to(x.device)
            else:
                q = next(u.sae.parameters())
                a = u.sae.encode(x[None].to(q.device, q.dtype))[0, u.index].float()
            (g,) = torch.autograd.grad(a, store["e"])
    finally:
        for h in hooks:
            h.remove()
    return g[0].float()


def _edit_counterexamples(
    model: Model, u: _Unit, p: ActivationPrediction, at: tuple, thr: float, kind: str, k: int = 4,
) -> list[Counterexample]:
    """One-token edits at positions ``<= i`` (HotFlip: the gradient's first-order change of the
    activation for every vocabulary token, ``k`` best per position, the best ``2k`` overall
    re-run exactly) that leave the description's call at ``i`` unchanged but move the unit across
    ``thr``: ``"predicted, silent"`` lowers a firing unit, ``"silent prediction, fires"`` raises it."""
    from ..model import _get

    ti, i, toks = at
    ids = model.to_tokens(p.corpus[ti])
    lower = kind == "predicted, silent"
    g = _unit_grad(model, u, ids, i)
    W = _get(model.hf, model.arch.embed).weight.detach().float()
    gain = W @ g[: i + 1].T.to(W.device)  # [V, i + 1]: activation change to first order
    gain = gain - gain[ids[0, : i + 1].to(W.device), torch.arange(i + 1, device=W.device)]
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    if special:
        gain[list(special)] = float("nan")
    score = (-gain if lower else gain).nan_to_num(float("-inf"))
    top = torch.topk(score, min(k, score.shape[0]), dim=0)  # k per position
    cand = sorted(
        ((float(top.values[r, j]), j, int(top.indices[r, j])) for r in range(top.values.shape[0]) for j in range(i + 1)),
        reverse=True,
    )[: 2 * k]
    out = []
    want = p.fires(toks, i)
    for _, j, w in cand:
        new = ids.clone()
        new[0, j] = w
        etoks = model.to_str_tokens(new)
        if bool(p.fires(etoks, i)) != bool(want):
            continue  # the edit changed what the description says: not a counterexample
        a = float(_activations(model, u, new)[i])
        if (a <= thr) if lower else (a > thr):
            ce = Counterexample(f"{kind} (edited)", ti, i, etoks[i], _context(etoks, i), a, float(want))
            ce.edit = f"position {j}: {toks[j]!r} -> {etoks[j]!r}"
            out.append(ce)
    return out


def _attention_rows(model: Model, u: _Unit, text: str, attends: Rule):
    ids = model.to_tokens(text)
    toks = model.to_str_tokens(ids)
    att = _run(model, ids, attentions=True).attentions[u.layer][0, u.index].float().cpu()
    keys = []
    for i in range(len(toks)):
        k = attends(toks, i)
        k = [] if k is None else [int(j) for j in k]
        if any(not 0 <= j <= i for j in k):
            raise ValueError(
                f"attends(tokens, {i}) returned keys {k}: a query attends only to positions 0..{i}"
            )
        keys.append(k)
    return ids, toks, att, keys


def _test_attention(model: Model, u: _Unit, p: AttentionPrediction) -> TestResult:
    masses, where = [], []
    for ti, text in enumerate(p.corpus):
        _, toks, att, keys = _attention_rows(model, u, text, p.attends)
        for i, k in enumerate(keys):
            if k:
                masses.append(float(att[i, k].sum()))
                where.append((ti, i, toks, int(att[i].argmax())))
    if not masses:
        raise ValueError("attends returned no keys anywhere in the corpus: nothing to test")
    ms = torch.tensor(masses)
    order = torch.argsort(ms)[: p.n_counterexamples]
    ces = []
    for j in order.tolist():
        if masses[j] >= 0.5:
            break
        ti, i, toks, top = where[j]
        ces.append(
            Counterexample("attends elsewhere", ti, i, toks[i],
                           f"{_context(toks, i)} -> attends to {toks[top]!r} at {top}", masses[j], 1.0)
        )  # fmt: skip
    mean = float(ms.mean())
    return TestResult("attention: mass on predicted keys", mean, p.min_mass, ">=",
                      mean >= p.min_mass, "fraction", {"n_queries": len(masses)}, ces)  # fmt: skip


def _default_reference(model: Model, prompts: list[str]) -> list[str]:
    lengths = [t.shape[1] for t in _tokens(model, prompts, "prompts")]
    ref = list(prompts)
    for t, idx in _groups(lengths).items():
        if len(idx) < 2:
            raise ValueError(
                f"resample ablation needs another prompt of the same token length ({t}) as "
                f"{prompts[idx[0]]!r}; add one, or give AblationPrediction(reference=[...])"
            )
        for a, b in zip(idx, idx[1:] + idx[:1]):
            ref[a] = prompts[b]
    return ref


def _test_ablation(
    model: Model, u: _Unit, p: AblationPrediction
) -> tuple[list[TestResult], list[str]]:
    comp: Any = u.label if u.kind == "head" else (u.site, u.layer, u.index)
    rows, drops = [], {}
    refs = {}
    for name, task in (("task", p.task), ("control", p.control)):
        if task is not None:
            refs[name] = (
                p.reference
                if (name == "task" and p.reference)
                else (_default_reference(model, task.prompts) if "resample" in p.kinds else None)
            )
    for kind in p.kinds:
        r = ablate(model, p.task.prompts, p.task.metric, comp, kind,
                   refs["task"] if kind == "resample" else None, progress=False)  # fmt: skip
        drop = r.clean_mean - float(r.ablated_mean)
        drops[kind] = drop
        rows.append(TestResult(f"ablation ({kind})", drop, p.drop_at_least, ">=",
                               drop >= p.drop_at_least, f"drop in {r.metric_name}",
                               {"clean": r.clean_mean, "ablated": float(r.ablated_mean),
                                "task": p.task.name}))  # fmt: skip
        if p.control is not None:
            assert p.control_within is not None
            c = ablate(model, p.control.prompts, p.control.metric, comp, kind,
                       refs["control"] if kind == "resample" else None, progress=False)  # fmt: skip
            change = abs(float(c.ablated_mean) - c.clean_mean)
            rows.append(TestResult(f"control ({kind})", change, p.control_within, "<=",
                                   change <= p.control_within, f"|change| in {c.metric_name}",
                                   {"clean": c.clean_mean, "ablated": float(c.ablated_mean),
                                    "task": p.control.name}))  # fmt: skip
    notes = []
    verdicts = {k: drops[k] >= p.drop_at_least for k in drops}
    if len(set(verdicts.values())) > 1:
        said = ", ".join(f"{k} {drops[k]:+.3g}" for k in drops)
        fails = [k for k, v in verdicts.items() if not v]
        notes.append(
            f"ablation kinds disagree about the drop on {p.task.name} ({said}; needs "
            f">= {p.drop_at_least:g}): {', '.join(fails)} would call the unit unimportant. "
            "A zero ablation that understates a unit while mean/resample do not is the signature "
            "of self-repair (a backup that notices the missing output) or of zero being off "
            "distribution; check the direct effect (direct_effect) before concluding."
        )
    return rows, notes


def _pattern_for(model: Model, toks: list[str], attends: Rule) -> torch.Tensor:
    t = len(toks)
    pat = torch.zeros(1, t, t)
    for i in range(t):
        k = attends(toks, i)
        k = [int(j) for j in k] if k else [0]
        pat[0, i, k] = 1.0 / len(k)
    return pat


def _test_replacement(model: Model, u: _Unit, h: Hypothesis) -> list[TestResult]:
    p = h.replacement
    assert p is not None
    m = as_metric(p.task.metric).bind(model)
    m.check_batch(len(p.task.prompts))
    head = (u.layer, u.index)

    def replaced(ids: torch.Tensor) -> Any:
        if p.replace == "pattern":
            assert h.attention is not None
            pat = _pattern_for(model, model.to_str_tokens(ids), h.attention.attends)
            return run_head_replaced(model, ids, head, pattern=pat)
        return run_head_replaced(model, ids, head, fn=p.replace)  # type: ignore[arg-type]

    vals: dict[str, list[float]] = {"clean": [], "zero": [], "replaced": []}
    for i, text in enumerate(p.task.prompts):
        ids = model.to_tokens(text)
        row = torch.tensor([i])
        outs = {
            "clean": _run(model, ids),
            "zero": run_head_replaced(model, ids, head, fn=torch.zeros_like),
            "replaced": replaced(ids),
        }
        clean_last = outs["clean"].logits[:, -1].float()
        for k, o in outs.items():
            lg = o.logits[:, -1].float()
            vals[k].append(float(m(lg, pairs=row.to(lg.device), clean_logits=clean_last)[0]))
    mean = {k: sum(v) / len(v) for k, v in vals.items()}
    span = mean["clean"] - mean["zero"]
    keep = (mean["replaced"] - mean["zero"]) / span if abs(span) > 1e-9 else float("nan")
    what = "hand-set attention pattern" if p.replace == "pattern" else "replacement function"
    rows = [
        TestResult("replacement: metric kept", keep, p.keep_at_least, ">=",
                   keep >= p.keep_at_least, f"fraction ({what})",
                   {**{f"{k}_metric": v for k, v in mean.items()}, "metric": m.name})
    ]  # fmt: skip
    if p.neutral:
        losses = {"clean": [], "replaced": []}
        for text in p.neutral:
            ids = model.to_tokens(text)
            if ids.shape[1] < 2:
                continue
            tgt = ids[0, 1:].to(model.device)
            for k, o in (("clean", _run(model, ids)), ("replaced", replaced(ids))):
                lp = torch.log_softmax(o.logits[0, :-1].float(), -1)
                losses[k].append(float(-lp.gather(1, tgt[:, None]).mean()))
        if losses["clean"]:
            d = sum(losses["replaced"]) / len(losses["replaced"]) - sum(losses["clean"]) / len(
                losses["clean"]
            )
            rows.append(TestResult("replacement: loss change on neutral text", d,
                                   p.max_loss_increase, "<=", d <= p.max_loss_increase, "nats",
                                   {"clean_loss": sum(losses["clean"]) / len(losses["clean"])}))  # fmt: skip
    return rows


def _test_subspace(model: Model, u: _Unit, p: SubspacePrediction) -> list[TestResult]:
    from .illusion import illusion_check

    r = illusion_check(model, p.dataset, u.layer, u.vector, u.site, answers=p.answers,
                       n_pairs=p.n_pairs, drop=p.drop)  # fmt: skip
    detail = {"iia_read_part": r.iia_read, "iia_unread_part": r.iia_unread, "iia_whole_component": r.iia_full,
              "unread_fraction": r.unread_fraction, "n_pairs": r.n_pairs, "reasons": list(r.reasons)}  # fmt: skip
    best_part = max(r.iia_read, r.iia_unread)
    return [
        TestResult("interchange (along the direction)", r.iia_direction, p.min_iia, ">=",
                   r.iia_direction >= p.min_iia, "IIA", detail),  # fmt: skip
        TestResult("illusion check (best part alone)", best_part, r.iia_direction - p.drop, ">=",
                   not r.illusory, "IIA", detail),  # fmt: skip
    ]


def _validate_circuit(hypothesis: Hypothesis, model: Model | None, progress: bool) -> Verdict:
    from .circuit import circuit_tests

    c = hypothesis.unit
    if model is not None and c.model is not None and model is not c.model:
        raise ValueError("the circuit was found on another model object; validate it on its own model (leave model out)")
    label = f"circuit ({int(c.in_circuit.sum())} of {c.n_edges} edges, {c.method})"
    bar = _progress(1, progress, f"validating {label}")
    try:
        tests = circuit_tests(c, hypothesis.circuit)
        bar.update(1)
    finally:
        bar.close()
    return Verdict(label, hypothesis.description, c.model_name, tests, [])


def validate(
    hypothesis: Hypothesis, model: Model | None = None, *, progress: bool = True
) -> Verdict:
    """Run every testable part of ``hypothesis`` on ``model`` (or ``hypothesis.model``) and return a
    :class:`~.verdict.Verdict`: one row per test with its figure, threshold and pass/fail, the
    counterexamples, and a note wherever the ablation kinds disagree. Inputs are checked before
    any forward pass; a progress bar counts the parts."""
    if not isinstance(hypothesis, Hypothesis):
        raise TypeError(f"validate takes a Hypothesis, got {type(hypothesis).__name__}")
    if hypothesis.circuit is not None:
        return _validate_circuit(hypothesis, model, progress)
    model = model if model is not None else hypothesis.model
    if model is None:
        raise ValueError(
            "give the model: validate(hypothesis, model) or Hypothesis(..., model=model)"
        )
    check_model(model)
    _check_lm(model)
    u = _parse_unit(model, hypothesis.unit)
    head_only = [n for n, part in (("attention", hypothesis.attention),
                                   ("replacement", hypothesis.replacement)) if part is not None]  # fmt: skip
    if head_only and u.kind != "head":
        raise ValueError(
            f"{' and '.join(head_only)} predictions are about attention heads; {u.label} is a {u.kind}"
        )
    if head_only:
        _check_local(model, "attention and replacement tests")
    if hypothesis.subspace is not None:
        if u.kind != "direction":
            raise ValueError(f"a subspace prediction is about a direction (site, L, vector); {u.label} is a {u.kind}")
        if u.site not in ("resid_pre", "resid_post"):
            raise ValueError(f"the subspace test patches residual-stream directions; {u.label} is at {u.site}")
    if hypothesis.ablation is not None and u.kind in ("direction", "feature"):
        raise ValueError(
            f"ablation predictions take heads and neurons; {u.label} is a {u.kind} "
            "(ablate the site it lives in, or test it by activation)"
        )
    for part in (hypothesis.ablation, hypothesis.replacement):
        if part is not None:
            for t in (part.task, getattr(part, "control", None)):
                if t is not None:
                    as_metric(t.metric).bind(model).check_batch(len(t.prompts))
                    _tokens(model, t.prompts, f"{t.name}.prompts")
    if hypothesis.ablation is not None and "resample" in hypothesis.ablation.kinds:
        if hypothesis.ablation.reference is None:
            _default_reference(model, hypothesis.ablation.task.prompts)
            if hypothesis.ablation.control is not None:
                _default_reference(model, hypothesis.ablation.control.prompts)

    steps: list[tuple[str, Callable[[], Any]]] = []
    if hypothesis.activation is not None:
        steps.append(("activation", lambda: _test_activation(model, u, hypothesis.activation)))
    if hypothesis.attention is not None:
        steps.append(("attention", lambda: [_test_attention(model, u, hypothesis.attention)]))
    if hypothesis.ablation is not None:
        steps.append(("ablation", lambda: _test_ablation(model, u, hypothesis.ablation)))
    if hypothesis.replacement is not None:
        steps.append(("replacement", lambda: _test_replacement(model, u, hypothesis)))
    if hypothesis.subspace is not None:
        steps.append(("subspace", lambda: _test_subspace(model, u, hypothesis.subspace)))
    tests: list[TestResult] = []
    notes: list[str] = []
    bar = _progress(len(steps), progress, f"validating {u.label}")
    try:
        for name, run in steps:
            bar.set_postfix_str(name)
            out = run()
            if name == "ablation":
                rows, more = out
                tests += rows
                notes += more
            else:
                tests += out
            bar.update(1)
    finally:
        bar.close()
    return Verdict(u.label, hypothesis.description, model.name, tests, notes)


__all__ = [
    "ABLATION_KINDS",
    "AblationPrediction",
    "ActivationPrediction",
    "AttentionPrediction",
    "Hypothesis",
    "ReplacementPrediction",
    "PromptTask",
    "SubspacePrediction",
    "validate",
]
