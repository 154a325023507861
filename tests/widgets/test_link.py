"""mw.link (mi_widgets/widgets/link.py): one selection shared by views, kept in the kernel with
traitlets observers. On zoo:tiny (the planted fact "The Eiffel Tower is in") and zoo:ioi (heads)."""

from __future__ import annotations

import pytest
import traitlets

import mi_widgets as mw
from mi_widgets.core.interventions.ablation import ablate
from mi_widgets.widgets.ablation import Ablation
from mi_widgets.widgets.attention_patterns import AttentionPatterns
from mi_widgets.widgets.link import link
from mi_widgets.widgets.logit_lens import LogitLens
from mi_widgets.widgets.token_activations import TokenActivations

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"


@pytest.fixture(scope="module")
def patching(tiny):
    return mw.activation_patching(tiny, CLEAN, CORRUPT, mw.logit_diff(" Paris", " Tokyo"),
                                  positions="each", layers=[0, 1], progress=False)


@pytest.fixture
def views(tiny, patching):
    toks = TokenActivations(tiny, CLEAN, "mlp_post", 0)
    lens = LogitLens(mw.logit_lens(tiny, CLEAN, k=3))
    attn = AttentionPatterns(tiny, CLEAN)
    grid = patching.widget()
    return toks, lens, attn, grid


def test_a_token_click_selects_that_position_everywhere(views):
    toks, lens, attn, grid = views
    assert toks.texts[0] == lens.tokens == attn.tokens == grid.clean_tokens
    ln = link(toks, lens, attn, grid, on="position")
    toks.selected_token = 3  # as a click in the browser sets it
    assert lens.selected_position == 3
    assert attn.selected_position == 3
    assert grid.selected_cell == {"layer": grid.layers[0], "position": 3}
    assert ln.value == 3
    # from another view, with the grid's layer kept
    grid.selected_cell = {"layer": 1, "position": 5}
    assert (toks.selected_token, lens.selected_position, attn.selected_position) == (5, 5, 5)
    lens.selected_position = -1  # clearing clears the others
    assert toks.selected_token == -1 and grid.selected_cell == {}
    assert ln.errors == []


def test_no_loop_each_view_set_once(views):
    toks, lens, attn, grid = views
    link(toks, lens, attn, grid, on="position")
    counts = {"toks": 0, "lens": 0, "attn": 0, "grid": 0}

    def counter(name):
        def f(change):
            counts[name] += 1
        return f

    toks.observe(counter("toks"), "selected_token")
    lens.observe(counter("lens"), "selected_position")
    attn.observe(counter("attn"), "selected_position")
    grid.observe(counter("grid"), "selected_cell")
    toks.selected_token = 2
    assert counts == {"toks": 1, "lens": 1, "attn": 1, "grid": 1}


def test_unlink_stops_the_sharing(views):
    toks, lens, _, _ = views
    ln = link(toks, lens)
    toks.selected_token = 1
    assert lens.selected_position == 1
    ln.unlink()
    toks.selected_token = 4
    assert lens.selected_position == 1
    assert "unlinked" in repr(ln)


def test_texts_that_differ_refuse_to_link(tiny):
    a = TokenActivations(tiny, CLEAN, "mlp_post", 0)
    b = LogitLens(mw.logit_lens(tiny, "The Colosseum is in", k=3))
    with pytest.raises(ValueError, match="cannot link on position.*texts must be the same"):
        link(a, b, on="position")
    with pytest.raises(ValueError, match="on must be one of"):
        link(a, b, on="token")


def test_invalid_selection_is_reverted_with_a_clear_error(views):
    toks, lens, attn, grid = views
    link(toks, lens, attn, grid)
    with pytest.raises(traitlets.TraitError, match="selected_position must be -1"):
        lens.selected_position = 99
    with pytest.raises(traitlets.TraitError, match="selected_position must be -1"):
        attn.selected_position = -5
    with pytest.raises(traitlets.TraitError, match="selected_token must be -1"):
        toks.selected_token = 99
    assert (toks.selected_token, lens.selected_position, attn.selected_position) == (-1, -1, -1)


def test_a_head_selected_in_ablation_selects_it_in_attention(tiny):
    heads = [f"{layer}.{h}" for layer in range(tiny.n_layers) for h in range(tiny.n_heads)]
    r = ablate(tiny, CLEAN, mw.logit_diff(" Paris", " Tokyo"), heads, kind="zero",
               separately=True, progress=False)
    abl = Ablation.from_result(r)
    attn = AttentionPatterns(tiny, CLEAN)
    ln = link(abl, attn, on="head")
    abl.selected_component = "1.2"
    assert attn.selected_head == "1.2"
    assert abl.panel  # the ablation view computed its panel for that head
    attn.select(0, 1)
    assert abl.selected_component == "0.1"
    assert ln.value == (0, 1)


def test_layer_link_moves_the_grid_row(tiny, patching):
    grid = patching.widget()
    toks = TokenActivations(tiny, CLEAN, "mlp_post", 0)
    link(grid, toks, on="layer")
    grid.select(1, position=2)
    assert toks.layer == 1
    toks.layer = 0
    assert grid.selected_cell == {"layer": 0, "position": 2}
