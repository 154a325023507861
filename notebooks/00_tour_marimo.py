import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    return (mo,)


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    # mi-widgets: a tour

    This notebook runs offline on the models shipped inside the package. It follows the field's
    order — **decomposition → description → validation → concepts → circuits** — and each later
    notebook goes deeper into one of those.

    * `zoo:tiny` — a 4-layer GPT-2 we trained on a seeded synthetic corpus with planted facts
      ("The Eiffel Tower is in" → " Paris"), a sentiment concept and true/false statements. Its
      ground truth is what measurements on the shipped weights established.
    * `zoo:induction`, `zoo:ioi` — GPT-2s whose weights were set by hand so that named heads do
      named jobs. Their ground truth holds by construction.

    This is `notebooks/00_tour.ipynb` as a marimo app: `marimo run notebooks/00_tour_marimo.py`
    (read-only app) or `marimo edit notebooks/00_tour_marimo.py`. Each view is wrapped in
    `mo.ui.anywidget(...)`, so a click is a value the cells below can depend on.
    """)
    return


@app.cell
def _():
    import torch

    import mi_widgets as mw

    model = mw.load()          # the embedded trained model; mw.load("gpt2") or a local dir work the same way
    model  # noqa: B018  (marimo displays a cell's last expression)
    return model, mw, torch


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## One vocabulary for every architecture

    Sites are named the way researchers name them (TransformerLens' vocabulary), whatever the
    model family: `resid_pre`, `resid_mid`, `resid_post`, `attn_out`, `mlp_out`, `mlp_post`
    (neurons), `head_out` (each head's write into the residual stream) and `attn_pattern`.
    """)
    return


@app.cell
def _(model):
    print(model.sites)
    print(model.to_str_tokens("The Eiffel Tower is in Paris."))
    out = model.run(model.to_tokens("The Eiffel Tower is in"), [("resid_post", 1), ("attn_pattern", 0)])
    {k: tuple(v.shape) for k, v in out.items()}
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Decomposition: what do the neurons do?

    `TokenActivations` colours each token by one unit. **Hover** a token for its exact value,
    **click** it to list the units that fire most there, **click a unit** to recolour the text by
    it. The site and layer selectors recompute in one nnsight trace.
    """)
    return


@app.cell
def _(mo, model, mw):
    texts = [
        "The Eiffel Tower is in Paris. The Colosseum is in Rome.",
        "The food was wonderful and the staff were kind.",
        "The food was awful and the staff were rude.",
    ]
    w = mw.TokenActivations(model, texts, site="mlp_post", layer=1)
    view = mo.ui.anywidget(w)
    view  # noqa: B018
    return texts, view, w


@app.cell
def _(mo, view):
    # marimo re-runs this cell whenever the view's selection changes
    _i = view.value.get("selected_token")
    mo.md(f"Clicked token (as Python sees it): <span id='mw-tour-selected'>{_i}</span>")
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    What you click is a trait that Python can read, observe and set: the view follows.
    """)
    return


@app.cell
def _(w):
    w.selected_token = 5                       # as if you had clicked the 6th token
    print(w.selected_position)                 # (text, position, token)
    top = w.result.topk(3)
    print("top units there:", top[0][5].tolist())
    w.selected_unit = int(top[0][5, 0])        # recolour by the strongest of them
    print(w.unit_label)
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    Every view is backed by a small result object: a tidy table, a matplotlib figure for papers,
    and the widget.
    """)
    return


@app.cell
def _(w):
    r = w.result
    r.to_pandas(unit=w.selected_unit).head()
    return (r,)


@app.cell
def _(r, w):
    r.top_tokens(w.selected_unit, k=5)
    return


@app.cell
def _(r, w):
    r.plot(unit=w.selected_unit)
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Concepts: a direction instead of a neuron

    A unit can be any direction in a site. Here, a crude sentiment direction: the difference of
    mean `resid_post` activations between a positive and a negative review. (The concepts notebook
    does this properly, with probes, control tasks and held-out data.)
    """)
    return


@app.cell
def _(mo, model, mw, texts):
    layer = 2
    pos = mw.token_activations(model, texts[1], site="resid_post", layer=layer).acts.mean(0)
    neg = mw.token_activations(model, texts[2], site="resid_post", layer=layer).acts.mean(0)
    direction = pos - neg
    mo.ui.anywidget(mw.TokenActivations(
        model, ["The staff were kind.", "The staff were rude.", "The food was lovely."],
        site="resid_post", layer=layer, unit=direction, unit_label="positive − negative"))
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Validation: ground truth we can check

    Each zoo model carries a ground-truth record: the mechanism, the prompts that probe it, the
    components that implement it, and the measured figures with the command that measures them.
    """)
    return


@app.cell
def _(mw):
    gt = mw.zoo.ground_truth("tiny")
    f = gt["figures"]
    print("facts, training templates :", f["facts"]["train_templates"]["accuracy"])
    print("facts, held-out templates :", f["facts"]["heldout_templates"]["accuracy"])
    print("sentiment probe, by layer :", f["sentiment_probe"]["probe_test_accuracy"])
    print("true/false probe, by layer:", f["truth_probe"]["probe_test_accuracy"])
    print("how to re-measure         :", gt["commands"]["ground_truth"])
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Circuits: heads with known jobs

    In `zoo:induction`, head **0.1** is a previous-token head and head **1.2** an induction head
    (set by hand). On a random sequence repeated twice, the induction head writes strongly only in
    the second half, where it can copy what came next last time. `head_out` units are heads; a
    head's value at a token is the norm of its write into the residual stream.
    """)
    return


@app.cell
def _(mo, mw, torch):
    ind = mw.load("zoo:induction")
    print(mw.zoo.ground_truth("induction")["components"])
    vocab = [t for t in ind.tokenizer.get_vocab() if t.startswith("Ġ")]
    g = torch.Generator().manual_seed(0)
    words = [vocab[i].replace("Ġ", " ") for i in torch.randperm(len(vocab), generator=g)[:12].tolist()]
    seq = "".join(words)
    wi = mw.TokenActivations(ind, seq + seq, site="head_out", layer=1, unit=2)
    norms = wi.result.unit_values(2)
    print(f"head 1.2 write, first half {norms[1:13].mean():.2f}  vs  second half {norms[13:].mean():.2f}")
    mo.ui.anywidget(wi)
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Share it

    `to_html` writes one self-contained file — script and data inline, no network — that renders
    the same view read-only. A saved notebook also keeps a static copy of every view.
    """)
    return


@app.cell
def _(w):
    import os
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "tokens.html")
    w.to_html(path)
    print(path, os.path.getsize(path), "bytes")
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Where the answer lives, in one call

    The field's central experiment: run *The Eiffel Tower is in* and a corrupted prompt, splice activations from one run into the other, and see which layer and position carry the answer. Hover a cell for its value, click one for the patched run's next tokens.
    """)
    return


@app.cell
def _(mo, model, mw):
    patching = mw.activation_patching(model, "The Eiffel Tower is in", "The Senso Temple is in",
                                      mw.logit_diff(" Paris", " Tokyo"), site="resid_pre", positions="each")
    mo.ui.anywidget(patching.widget())
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(r"""
    ## Next

    The other notebooks follow the field's order, each on the shipped models with known answers:

    - `01_decomposition.ipynb`: a polysemantic neuron, a toy model of superposition, an SAE trained on `zoo:tiny` and its `FeatureDashboard`.
    - `02_description.ipynb`: activation patching, attribution patching, causal tracing, logit and tuned lens (`LogitLens`), attention (`AttentionPatterns`), attribution (`TokenSaliency`), patchscopes (`Patchscope`), steering (`Steering`), chain-of-thought faithfulness, ablation (`Ablation`) and path patching on `zoo:ioi`.
    - `03_concepts.ipynb`: probes with control tasks and OOD tests (`ProbeAccuracy`), LEACE erasure, interchange interventions and DAS, CCS.
    """)
    return


if __name__ == "__main__":
    app.run()
