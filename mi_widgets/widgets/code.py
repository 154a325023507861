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
    """Mixin for a view with ``code()``: answers the browser's ``"code"`` request."""

    def code(self) -> str:  # pragma: no cover - each view defines it
        raise NotImplementedError

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
    expr, item = _read(model, r.site, r.layer)
    take = f"\n        x = x[{item}] if isinstance(x, tuple) else x" if item is not None else ""
    lines = [
        f"texts = {list(r.texts)!r}",
        f"unit = {view.selected_unit}  # the {r.unit_kind} the view colours by",
        "values = []",
        "for text in texts:",
        '    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]',
        "    with torch.no_grad(), nn.trace(ids):",
        f"        x = {expr}  # {r.site}, layer {r.layer}{take}",
        "        acts = x[0].save()  # [T, units]",
        "    values.append(acts[:, unit].float())",
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
        "with torch.no_grad():",
        "    for x in resids:",
        "        probs = torch.softmax(unembed(norm(x[0])).float(), -1)  # [T, vocab]",
        "        p, i = probs.max(-1)",
        "        top_probs.append(p)",
        "        top_ids.append(i)",
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
    if layer < 0:
        expr, item, what = f"{_block(model, 0)}.input", None, "the embedding (block 0's input)"
    else:
        (expr, item), what = _read(model, site, layer), f"{site}, layer {layer}"
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
        "for text in texts:",
        '    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]',
        "    with torch.no_grad(), nn.trace(ids):",
        f"        x = {expr}",
        f"        x = x[{item or 0}] if isinstance(x, tuple) else x",
        "        acts.append(x[0, -1].save())  # the last token",
        "X = torch.stack(acts).double()",
        "scores = ((X - mean) / scale) @ coef + intercept  # > 0: class 1",
        "accuracy = ((scores > 0).long() == labels).double().mean()  # the test curve at this layer",
        "print(accuracy)",
    ]
    return _header(model, lines)
