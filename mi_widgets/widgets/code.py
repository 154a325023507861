"""Show the code: each view's ``code()`` is plain nnsight code that computes what it shows.

The printed program imports mi_widgets only to load the model (``model = mw.load(...)``); the
rest is ``with model.nn.trace(ids):`` over the model's own modules (their paths from the
family's component map) and torch. Its last lines name the numbers the view draws, so a reader
can run it, change it and compare (tests/widgets/test_show_code.py runs it in a fresh process
and compares with the view to 1e-4). The view's "code" button shows the same text.
"""

from __future__ import annotations

from typing import Any

from ._base import request_handler


class ShowsCode:
    """Mixin for a view with ``code()``: answers the browser's ``"code"`` request. A view sets
    ``_write_code = staticmethod(<its function below>)`` (or overrides ``code``)."""

    _write_code: Any = None

    def code(self) -> str:
        """Plain nnsight code (mi_widgets only loads the model) that computes what this view
        shows; its last lines print those numbers. The view's "code" button shows it. Raises
        ``ValueError`` saying why where this view's computation is not written out."""
        if self._write_code is None:  # pragma: no cover - each view sets it
            raise NotImplementedError(f"{type(self).__name__} does not write its code")
        return self._write_code(self)

    @request_handler("code", strict=True)  # takes no fields
    def _code_request(self, msg: dict, progress: Any) -> dict:
        return {"code": self.code()}


def _header(model: Any, lines: list[str]) -> str:
    head = [
        "import torch",
        "import mi_widgets as mw",
        "",
        f"model = mw.load({model.name!r})  # the only mi_widgets call: the rest is nnsight and torch",
        "nn = model.nn  # the nnsight LanguageModel",
        "",
    ]
    return "\n".join(head + lines) + "\n"


def _block(model: Any, layer: int | str) -> str:
    return f"nn.{model.arch.layers}[{layer}]"


def _module(model: Any, layer: int | str, rel: str) -> str:
    return _block(model, layer) + (f".{rel}" if rel else "")


def _read(model: Any, site: str, layer: int | str) -> tuple[str, int | None]:
    """``(expression, tuple item)`` of a site inside a trace (the item is taken when the module
    hands over a tuple)."""
    r = model.arch.reads[site]
    return f"{_module(model, layer, r.module)}.{r.io}", r.item


def _site(model: Any, site: str, layer: int | str, var: str = "x", indent: str = "        ") -> list[str]:
    """Lines (inside a trace) that bind ``var`` to the value of ``site`` at ``layer``."""
    expr, item = _read(model, site, layer)
    return [
        f"{indent}{var} = {expr}  # {site}, layer {layer}",
        f"{indent}{var} = {var}[{item or 0}] if isinstance({var}, tuple) else {var}",
    ]


def _each_text(model: Any, site: str, layer: int, save: str, after: list[str] | None = None) -> list[str]:
    """``for text in texts:`` one trace per text that reads ``site`` at ``layer`` into ``x`` and
    runs ``save`` inside the trace, then the lines ``after`` (indented one level)."""
    return [
        "for text in texts:",
        '    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]',
        "    with torch.no_grad(), nn.trace(ids):",
        *_site(model, site, layer),
        f"        {save}",
        *[f"    {line}" for line in after or []],
    ]


def _ids(var: str, text: str) -> str:
    return f'{var} = model.tokenizer({text!r}, return_tensors="pt")["input_ids"]  # [1, T], with BOS'


def _need(model: Any, what: str) -> None:
    if model is None:
        raise ValueError(f"this view has no model attached, so it cannot print the code of its {what}")
    if model.remote:
        raise ValueError("code() prints local code; this model runs remotely (NDIF)")


def token_activations_code(view: Any) -> str:
    r, model = view.result, view._model
    _need(model, "activations")
    if r.dictionary is not None or r.site == "head_out" or (view.selected_unit < 0):
        raise ValueError(
            "code() covers a neuron or dimension of a vector site; this view shows a "
            + ("dictionary's features" if r.dictionary is not None else
               "head_out site" if r.site == "head_out" else "direction")
        )
    lines = [
        f"texts = {list(r.texts)!r}",
        f"unit = {view.selected_unit}  # the {r.unit_kind} the view colours by",
        "values = []",
        *_each_text(model, r.site, r.layer, "acts = x[0].save()  # [T, units]",
                    ["values.append(acts[:, unit].float())"]),
        "values = torch.cat(values)  # one value per token, texts one after another: the colours",
        "print(values)",
    ]
    return _header(model, lines)


def logit_lens_code(view: Any) -> str:
    r, model = view.result, view._model
    _need(model, "lens")
    if r.lens != "logit":
        raise ValueError("code() prints the logit lens; the tuned lens needs its trained translators")
    rows = []  # (name, expression, item)
    for name in r.layer_names:
        if name == "embed":
            rows.append((name, f"{_block(model, 0)}.input", None))
        else:
            site, layer = name.split(" ")
            rows.append((name, *_read(model, site, int(layer))))
    lines = [_ids("ids", r.text), "resids = []", "with torch.no_grad(), nn.trace(ids):"]
    for name, expr, item in rows:
        lines.append(f"    x = {expr}  # {name}")
        lines.append(f"    x = x[{item or 0}] if isinstance(x, tuple) else x")
        lines.append("    resids.append(x.save())")
    lines += [
        "",
        "# each row through the final norm and the unembedding (the logit lens)",
        "norm, unembed = model.hf." + model.arch.final_norm + ", model.hf." + model.arch.unembed,
        "top_probs, top_ids = [], []",
    ]
    vocab = getattr(r, "vocab_ids", None)
    if vocab is not None:
        lines += [
            f"vocab = torch.tensor({[int(i) for i in vocab]})  # the restriction: only these rows of W_U",
            "W = unembed.weight[vocab]",
            "b = unembed.bias[vocab] if getattr(unembed, 'bias', None) is not None else 0.0",
        ]
    lines += [
        "with torch.no_grad():",
        "    for x in resids:",
        (
            "        probs = torch.softmax(unembed(norm(x[0])).float(), -1)  # [T, vocab]"
            if vocab is None
            else "        probs = torch.softmax((norm(x[0]) @ W.T + b).float(), -1)  # [T, len(vocab)], renormalised over it"
        ),
        "        p, i = probs.max(-1)",
        "        top_probs.append(p)",
        "        top_ids.append(i)" if vocab is None else "        top_ids.append(vocab[i])",
        f"top_probs = torch.stack(top_probs)  # [rows, T]: rows {list(r.layer_names)}",
        "top_ids = torch.stack(top_ids)  # each cell's top-1 token",
        "print([[model.tokenizer.decode([int(i)]) for i in row] for row in top_ids])",
        "print(top_probs)",
    ]
    return _header(model, lines)


def attention_patterns_code(view: Any) -> str:
    model = view._model
    _need(model, "patterns")
    sel = view.selected or (0, 0)
    expr, item = _read(model, "attn_pattern", sel[0])
    lines = [
        _ids("ids", view.result.text),
        f"layer, head = {sel[0]}, {sel[1]}",
        "with torch.no_grad(), nn.trace(ids):",
        f"    weights = {expr}[{item}].save()  # attention probabilities [1, heads, query, key]",
        "pattern = weights[0, head].float()  # [query, key]: the full pattern of the selected head",
        "print(pattern)",
    ]
    return _header(model, lines)


def _metric_code(name: str) -> list[str]:
    from .patching_grid import _metric_from_name

    m = _metric_from_name(name)
    if m is None or name == "kl_to_clean":
        raise ValueError(f"code() writes out logit_diff and prob metrics; this grid's metric is {name!r}")
    import ast

    node = ast.parse(name, mode="eval").body
    args = [ast.literal_eval(a) for a in node.args]  # type: ignore[attr-defined]
    fn = node.func.id  # type: ignore[attr-defined]
    ids = ", ".join(f'model.tokenizer({a!r}, add_special_tokens=False)["input_ids"][0]' for a in args)
    if fn == "logit_diff":
        body = "    return logits[a] - logits[b]  # logit difference at the last position"
        return [f"a, b = {ids}", "", "def metric(logits):", body]
    return [f"a = {ids}", "", "def metric(logits):", "    return torch.softmax(logits, -1)[a]"]


def patching_grid_code(view: Any) -> str:
    r, model = view.result, view._model
    _need(model, "patching grid")
    if r.site != "resid_pre" or list(r.dims) != ["layer", "position"] or r.n_pairs != 1:
        raise ValueError(
            "code() writes out one prompt pair patched on resid_pre per layer and position; "
            f"this grid is {r.site} over {list(r.dims)} with {r.n_pairs} pairs"
        )
    base, src = ("corrupt", "clean") if view.direction.startswith("denoise") else ("clean", "corrupt")
    lines = [
        _ids("clean", r.clean[0]),
        _ids("corrupt", r.corrupt[0]),
        *_metric_code(r.metric_name),
        "",
        f"layers, positions = {list(r.layers)}, {list(r.positions)}",
        f"# 1. the {src} run: remember each block's input (resid_pre)",
        "saved = []",
        f"with torch.no_grad(), nn.trace({src}):",
        "    for L in layers:",
        f"        saved.append({_block(model, 'L')}.input.save())",
        "    source_logits = nn.output.logits[0, -1].save()",
        f"with torch.no_grad(), nn.trace({base}):",
        "    base_logits = nn.output.logits[0, -1].save()",
        "m_clean, m_corrupt = (metric(source_logits), metric(base_logits))"
        + ("" if src == "clean" else "[::-1]"),
        f"# 2. one {base} run per cell, with that block's input at that position from the {src} run",
        "grid = torch.zeros(len(layers), len(positions))",
        "for i, L in enumerate(layers):",
        "    for j, p in enumerate(positions):",
        f"        with torch.no_grad(), nn.trace({base}):",
        f"            {_block(model, 'L')}.input[:, p] = saved[i][:, p]",
        "            logits = nn.output.logits[0, -1].save()",
        "        grid[i, j] = metric(logits)",
    ]
    if src != "clean":
        lines[lines.index("m_clean, m_corrupt = (metric(source_logits), metric(base_logits))[::-1]")] = (
            "m_corrupt, m_clean = metric(source_logits), metric(base_logits)"
        )
    if r.normalized:
        lines.append("grid = (grid - m_corrupt) / (m_clean - m_corrupt)  # 1: restores the clean answer")
    lines.append("print(grid)  # [layer, position]: the heatmap")
    return _header(model, lines)


def ablation_code(view: Any) -> str:
    from .ablation import _parse_head

    r, model = view.result, view._model
    _need(model, "ablations")
    heads = [_parse_head(c) for c in view.components]
    if r.kind != "zero" or not r.separately or any(h is None for h in heads):
        raise ValueError("code() writes out heads zero-ablated one at a time; this result is "
                         f"{r.kind} ablation of {list(view.components)[:4]}")
    o_proj = model.arch.o_proj
    lines = [
        f"prompts = {list(r.prompts)!r}",
        *_metric_code(r.metric_name),
        f"heads = {[tuple(h) for h in heads]!r}  # (layer, head)",
        f"d_head = {model.d_head}",
        "effects = torch.zeros(len(heads), len(prompts))",
        "for j, prompt in enumerate(prompts):",
        '    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]',
        "    with torch.no_grad(), nn.trace(ids):",
        "        clean = metric(nn.output.logits[0, -1]).save()",
        "    for i, (L, H) in enumerate(heads):",
        "        with torch.no_grad(), nn.trace(ids):",
        "            # zero the head's output z (the output projection's input, heads side by side)",
        f"            {_module(model, 'L', o_proj)}.input[..., H * d_head:(H + 1) * d_head] = 0",
        "            ablated = metric(nn.output.logits[0, -1]).save()",
        "        effects[i, j] = ablated - clean",
        "effect = effects.mean(1)  # ablated - clean per head, mean over prompts: the heatmap",
        "print(effect)",
    ]
    return _header(model, lines)


def probe_accuracy_code(view: Any) -> str:
    """The selected layer's probe (the best layer when none is selected) applied to the test split:
    the activations it reads, its decision values and its test accuracy. The probe's fitted
    weights are printed as numbers (training it is core's job; see ``mw.probe``)."""
    r, model = view.result, view._model
    _need(model, "probe")
    key = view._key(view.selected_layer, view.selected_site or None) if view.selected_layer is not None \
        else view.best_layer("test")
    fit = r.fits.get(key)
    if fit is None or not hasattr(fit, "intercept") or r.read != "last":
        raise ValueError("code() writes out a binary probe read at the last token; this probe is "
                         f"{type(fit).__name__ if fit is not None else 'not kept'} read at {r.read!r}")
    site, layer = key
    # the embedding is block 0's input
    site, layer, what = ("resid_pre", 0, "the embedding") if layer < 0 else (site, layer, f"{site}, layer {layer}")
    test = [r.texts[i] for i in r.test_index]
    labels = [int(r.labels[i]) for i in r.test_index]
    lines = [
        f"texts = {test!r}  # the probe's test split",
        f"labels = torch.tensor({labels!r})",
        f"# the fitted probe at {what}: logit = ((x - mean) / scale) @ coef + intercept",
        f"mean = torch.tensor({fit.mean.double().tolist()!r}, dtype=torch.float64)",
        f"scale = torch.tensor({fit.scale.double().tolist()!r}, dtype=torch.float64)",
        f"coef = torch.tensor({fit.coef.double().tolist()!r}, dtype=torch.float64)",
        f"intercept = {float(fit.intercept)!r}",
        "acts = []",
        *_each_text(model, site, layer, "acts.append(x[0, -1].save())  # the last token"),
        "X = torch.stack(acts).double()",
        "scores = ((X - mean) / scale) @ coef + intercept  # > 0: class 1",
        "accuracy = ((scores > 0).long() == labels).double().mean()  # the test curve at this layer",
        "print(accuracy)",
    ]
    return _header(model, lines)


def steering_code(view: Any) -> str:
    """The sweep plot: the metric of the prompt's next-token logits with ``coef * vector``
    added at every position of the site, one batch row per coefficient (the last sweep's
    settings, or the view's current ones over the slider's range, as the sweep button runs)."""
    import torch

    model, res = view._model, view.sweep_result
    _need(model, "steering sweep")
    if res is not None:
        if len(res.prompts) != 1 or res.positions != "all":
            raise ValueError("code() writes out a sweep of one prompt steered at every position; this sweep has "
                             f"{len(res.prompts)} prompts at positions {res.positions!r}")
        prompt, name, site, layer, coefs, metric = (
            res.prompts[0], res.vector_name, res.site, res.layer, list(res.coefs), res.metric_name)
    else:
        from ..core.metrics import logit_diff, prob

        metric = (logit_diff(view.metric_a, view.metric_b) if view.metric_b else prob(view.metric_a)).name
        prompt, name, site, layer = view.prompt, view.vector, view.site, view.layer
        coefs = torch.linspace(view.coef_min, view.coef_max, 21).tolist()
    vector = view.vectors[name].vector.detach().float().cpu()
    lines = [
        _ids("ids", prompt),
        f"vector = torch.tensor({vector.tolist()!r})  # the steering vector {name!r} [d_model]",
        f"coefs = torch.tensor({coefs!r})",
        *_metric_code(metric),
        "",
        "batch = ids.repeat(len(coefs), 1)  # one row per coefficient",
        "with torch.no_grad(), nn.trace(batch):",
        *_site(model, site, layer, "h", "    "),
        "    h[:] += coefs[:, None, None] * vector  # coef * vector at every position",
        "    logits = nn.output.logits[:, -1].save()  # [coefs, vocab]",
        "values = torch.stack([metric(row.float()) for row in logits])  # the sweep plot: metric per coef",
        "print(values)",
    ]
    return _header(model, lines)


def patchscope_code(view: Any) -> str:
    """The selected cell: the source prompt's residual state at (layer, position) written over
    the inspection prompt's at ``target_position`` in each target layer; each row's first
    decoded token and its probability (the view's rows; the rest of each row is greedy
    generation from there)."""
    model = view._model
    _need(model, "patchscope")
    if view.selected_layer < 0:
        raise ValueError("no cell is selected: click one (or call w.decode(layer, position)) first")
    n = model.n_layers
    src = ("resid_pre", view.selected_layer) if view.selected_layer < n else ("resid_post", n - 1)
    pre, pre_item = _read(model, "resid_pre", "tl")
    post, post_item = _read(model, "resid_post", n - 1)
    lines = [
        _ids("source", view.source_prompt),
        _ids("target", view.target_prompt),
        f"layer, position = {view.selected_layer}, {view.selected_position}"
        f"  # the selected cell (layer {n}: after the last block)",
        f"target_position = {view.target_position}  # the inspection prompt's position that gets the state",
        f"target_layers = {list(view.target_layers)!r}",
        "with torch.no_grad(), nn.trace(source):",
        *_site(model, *src, "x", "    "),
        "    state = x[0, position].save()  # [d_model]",
        "first_tokens, first_probs = [], []",
        "for tl in target_layers:",
        "    with torch.no_grad(), nn.trace(target):",
        f"        if tl < {n}:",
        f"            h = {pre}  # resid_pre, layer tl",
        f"            h = h[{pre_item or 0}] if isinstance(h, tuple) else h",
        "        else:",
        f"            h = {post}  # after the last block",
        f"            h = h[{post_item or 0}] if isinstance(h, tuple) else h",
        "        h[0, target_position] = state",
        "        probs = torch.softmax(nn.output.logits[0, -1].float(), -1).save()",
        "    p, i = probs.max(-1)",
        "    first_tokens.append(model.tokenizer.decode([int(i)]))",
        "    first_probs.append(p)",
        "first_probs = torch.stack(first_probs)  # one per target layer: the view's probabilities",
        "print(first_tokens)",
        "print(first_probs)",
    ]
    return _header(model, lines)


def feature_dashboard_code(view: Any) -> str:
    """The selected feature over the dashboard's texts: its activation at every token (the
    dictionary's encoder written out for that one feature), its largest activation and the share
    of tokens it fires on (the list's ``max_act`` and ``frequency``; BOS left out, as the pass
    does)."""
    from ..core.decomposition.features import LinearDictionary

    model, sae, f = view._model, view._sae, view.selected
    _need(model, "features")
    relu = isinstance(sae, LinearDictionary) or (
        getattr(sae, "kind", None) == "relu" and getattr(sae, "W_enc", None) is not None and sae.W_enc.ndim == 2
    )
    if sae is None or not relu:
        raise ValueError(f"code() writes out a ReLU dictionary's encoder; this one is {type(sae).__name__}"
                         f" ({getattr(sae, 'kind', 'no kind')})")
    if f < 0:
        raise ValueError("no feature is selected: click one (or call w.select(feature)) first")
    b_dec = isinstance(sae, LinearDictionary) or bool(getattr(sae, "apply_b_dec_to_input", False))
    d = view.data
    lines = [
        f"texts = {list(d.texts)!r}  # the dashboard's dataset",
        f"feature = {f}",
        "# the dictionary's encoder for this feature: relu((x - b_dec) @ w_enc + b_enc)",
        f"w_enc = torch.tensor({sae.W_enc[:, f].detach().float().cpu().tolist()!r})",
        f"b_enc = {float(sae.b_enc[f])!r}",
        f"b_dec = torch.tensor({sae.b_dec.detach().float().cpu().tolist()!r})" if b_dec else "b_dec = 0.0",
        "bos = model.tokenizer.bos_token_id",
        "acts = []",
        *_each_text(model, d.site, d.layer, "h = x[0].save()  # [T, d_in]", [
            "a = torch.relu((h.float() - b_dec) @ w_enc + b_enc)  # the feature at each token",
            "acts.append(a[1:] if ids[0, 0] == bos else a)  # the pass leaves out BOS",
        ]),
        "acts = torch.cat(acts)",
        "max_act = acts.max()  # the list's max activation",
        "frequency = (acts > 0).double().mean()  # the list's frequency: the share of tokens it fires on",
        "print(max_act, frequency)",
    ]
    return _header(model, lines)


def _target_tokens(label: str) -> list[Any]:
    """The token(s) of an attribution target's label ``"logit ' Paris'"`` / ``"logit ' Paris' -
    ' Rome'"``; ``[]`` for any other target."""
    import ast

    if not label.startswith("logit "):
        return []
    rest = label[len("logit "):]
    cuts = [i for i in range(len(rest)) if rest.startswith(" - ", i)]
    for part in [[rest], *[[rest[:i], rest[i + 3:]] for i in cuts]]:
        try:
            toks = [ast.literal_eval(p) for p in part]
        except (ValueError, SyntaxError):
            continue
        if all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in toks):
            return toks
    return []


def token_saliency_code(view: Any) -> str:
    """The attribution of the last position's logit (or logit difference) to each token: the
    gradient at the input embeddings (of runs on the straight path from the zero baseline, for
    integrated gradients) times the embeddings, summed over the embedding dimension."""
    a = view.attribution
    if a is None:
        raise ValueError("this saliency view was built from bare values; code() needs the AttributionResult "
                         "(show attribute(...) itself, or pass attribution= to TokenSaliency)")
    model = a.model
    _need(model, "attribution")
    toks = _target_tokens(a.target_label)
    if a.method not in ("grad_x_input", "integrated_gradients") or not a.baseline.startswith("zero embedding") \
            or not toks:
        raise ValueError("code() writes out gradient × input and integrated gradients of a logit (difference) "
                         f"from the zero baseline; this is {a.method} of {a.target_label!r} from {a.baseline!r}")
    ids = ", ".join(f'model.tokenizer({t!r}, add_special_tokens=False)["input_ids"][0]' if isinstance(t, str)
                    else repr(t) for t in toks)
    steps = a.n_steps if a.method == "integrated_gradients" else 1
    f = "logits[:, a] - logits[:, b]" if len(toks) == 2 else "logits[:, a]"
    lines = [
        _ids("ids", a.text),
        f"{'a, b' if len(toks) == 2 else 'a'} = {ids}",
        f"steps = {steps}  # " + ("runs on the path from the baseline to x (integrated gradients)"
                                  if a.method == "integrated_gradients" else "one run at x (gradient × input)"),
        "with torch.no_grad():",
        f"    x = model.hf.{model.arch.embed}(ids).float()  # the input embeddings [1, T, d_model]",
        "baseline = torch.zeros_like(x)",
        "if ids[0, 0] == model.tokenizer.bos_token_id:",
        "    baseline[:, 0] = x[:, 0]  # BOS keeps its embedding: it gets no attribution",
        "alphas = (torch.arange(steps) + 0.5) / steps" if a.method == "integrated_gradients" else "alphas = torch.ones(1)",
        "xs = (baseline + alphas[:, None, None] * (x - baseline)).requires_grad_(True)",
        "batch = ids.repeat(steps, 1)",
        "with nn.trace(batch):",
        f"    nn.{model.arch.embed}.output = xs  # the runs' embeddings, differentiable",
        "    logits = nn.output.logits[:, -1].float().save()",
        f"target = {f}  # per run: {a.target_label}",
        "(grad,) = torch.autograd.grad(target.sum(), xs)",
        "values = ((x - baseline) * grad.mean(0, keepdim=True)).sum(-1)[0]  # one per token: the colours",
        "print(values)",
    ]
    return _header(model, lines)


def circuit_graph_code(view: Any) -> str:
    """EAP scores of the shown edges into MLPs and the logits (GPT-2 family, one prompt pair, a
    logit difference): ``(sender output on corrupt - on clean) · d metric / d receiver input``,
    summed over positions, the gradient taken at the receiver's input before its LayerNorm on
    the clean run. Edges into a head's q/k/v need each head's LayerNorm backward split by hand
    (core/circuits/_graph.py); the program leaves them out and says which it covers."""
    import ast

    c, model = view.result, view.result.model
    _need(model, "edge scores")
    task = c.task
    spec = getattr(task, "spec", None)
    clean, corrupt = list(getattr(spec, "clean", []) or []), list(getattr(spec, "corrupt", []) or [])
    m = getattr(task, "metric", None)
    name = getattr(m, "name", "")
    if c.method != "eap" or model.family != "gpt2" or len(clean) != 1 or len(corrupt) != 1 \
            or not name.startswith("logit_diff("):
        raise ValueError("code() writes out EAP on one prompt pair of a GPT-2 family model with a logit "
                         f"difference; this circuit is {c.method} on {model.family} with {len(clean)} pairs "
                         f"and metric {name or c.metric_name!r}")
    node = ast.parse(name, mode="eval").body
    a, b = (ast.literal_eval(x) for x in node.args)  # type: ignore[attr-defined]
    a, b = (x[0] if isinstance(x, list) else x for x in (a, b))
    shown = [i for i in view.shown_edges() if c.kinds[i] == ""]
    if not shown:
        raise ValueError("none of the shown edges goes into an MLP or the logits; code() covers those")
    edges = [(c.senders[i], c.receivers[i]) for i in shown]
    h = model.arch.layers
    lines = [
        _ids("clean", clean[0]),
        _ids("corrupt", corrupt[0]),
        f'a, b = (model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ({a!r}, {b!r}))',
        f"n_layers, n_heads, d_head = {model.n_layers}, {model.n_heads}, {model.d_head}",
        f"edges = {edges!r}  # the shown edges into MLPs and the logits (sender, receiver)",
        "",
        "",
        "def sender_outputs(outs):",
        '    """Each sender\'s write into the residual stream [T, d_model]: the embeddings, each head\'s',
        '    z @ W_O slice (the output bias b_O is no sender: it is the same on every run), each MLP."""',
        "    out = {'input': outs['embed'][0]}",
        "    for L in range(n_layers):",
        f"        W_O = model.hf.{h}[L].attn.c_proj.weight  # [heads * d_head, d_model]",
        "        for H in range(n_heads):",
        "            sl = slice(H * d_head, (H + 1) * d_head)",
        "            out[f'a{L}.h{H}'] = outs['z', L][0, :, sl] @ W_O[sl]",
        "        out[f'm{L}'] = outs['mlp', L][0]",
        "    return out",
        "",
        "",
        "def run(ids, taps=None):",
        '    """One trace saving every sender\'s output; with taps, adds a zero tap to each receiver\'s',
        '    input (MLP: its ln_2 input; logits: ln_f\'s) so that autograd gives d metric / d input."""',
        "    outs = {}",
        "    with nn.trace(ids):",
        f"        outs['embed'] = (nn.{model.arch.embed}.output + nn.transformer.wpe.output).save()",
        "        for L in range(n_layers):",
        f"            blk = nn.{h}[L]",
        "            outs['z', L] = blk.attn.c_proj.input.save()",
        "            if taps is not None:",
        "                blk.ln_2.input = blk.ln_2.input + taps[f'm{L}']",
        "            outs['mlp', L] = blk.mlp.output.save()",
        "        if taps is not None:",
        "            nn.transformer.ln_f.input = nn.transformer.ln_f.input + taps['logits']",
        "        logits = nn.output.logits[0, -1].float().save()",
        "    return logits, outs",
        "",
        "",
        "with torch.no_grad():",
        "    _, corrupt_outs = run(corrupt)",
        "T = clean.shape[1]",
        "taps = {r: torch.zeros(1, T, model.hf.config.n_embd, requires_grad=True) for r in",
        "        [f'm{L}' for L in range(n_layers)] + ['logits']}",
        "logits, clean_outs = run(clean, taps)",
        "metric = logits[a] - logits[b]  # the circuit's logit difference on the clean run",
        "names = list(taps)",
        "grads = dict(zip(names, torch.autograd.grad(metric, [taps[r] for r in names])))",
        "with torch.no_grad():",
        "    x_out, c_out = sender_outputs(corrupt_outs), sender_outputs(clean_outs)",
        "    scores = torch.stack([((x_out[s] - c_out[s]) * grads[r][0]).sum() for s, r in edges])",
        "print(scores)  # one EAP score per edge: the graph's edge weights",
    ]
    return _header(model, lines)
