"""ActivationStore: batches of real-token activations, equal to Model.run, memory-bounded and
resumable."""

from __future__ import annotations

import pytest
import torch

from mi_widgets.core.decomposition.activation_store import ActivationStore

TEXTS = [
    "The Eiffel Tower is in Paris.",
    "The food was wonderful and the staff were friendly. Overall the review is positive.",
    "Claim: Big Ben is in Rome. This is false.",
    "Tom opened the box yesterday.",
    "Q: Where is Anna's favourite place? Anna likes the Kremlin. The Kremlin is in Moscow. A: Moscow.",
] * 12


def _reference(model, texts, site, layer):
    """Every real token's activation via Model.run (one unbatched trace per text), BOS dropped."""
    rows = []
    for t in texts:
        v = model.run(model.to_tokens(t), [(site, layer)])[(site, layer)]
        rows.append(v[1:])  # position 0 is the BOS zoo:tiny's tokenizer prepends
    return torch.cat(rows)


@pytest.mark.parametrize("site,layer", [("resid_pre", 1), ("mlp_post", 0), ("resid_mid", 2)])
def test_batches_hold_exactly_the_real_token_activations(tiny, site, layer):
    ref = _reference(tiny, TEXTS, site, layer)
    store = ActivationStore(tiny, site, layer, TEXTS, batch_size=64, buffer_tokens=400, texts_per_forward=7, progress=False)
    batches = list(store)
    width = tiny.site_width(site)
    assert all(b.shape == (64, width) for b in batches)
    got = torch.cat(batches)
    # every yielded row is one of the reference rows (the batches are a shuffle of them)
    # (to float32 rounding: a padded batch sums in another order than a single sequence)
    d = torch.cdist(got, ref)
    nearest = d.min(dim=1)
    rel = nearest.values / ref[nearest.indices].norm(dim=-1).clamp_min(1e-6)
    assert float(rel.max()) < 2e-3
    assert 0 <= len(ref) - len(got) < 64  # only the last partial batch is dropped
    # shuffled: consecutive rows of a batch do not follow the text order
    first = d.argmin(dim=1)[:64]
    assert not torch.equal(first, torch.sort(first).values)


def test_no_bos_or_pad_rows(tiny):
    store = ActivationStore(tiny, "resid_pre", 0, TEXTS, batch_size=32, buffer_tokens=300, progress=False)
    bos = tiny.run(tiny.to_tokens("Paris"), [("resid_pre", 0)])[("resid_pre", 0)][0]
    got = torch.cat(list(store))
    assert float((got - bos).norm(dim=-1).min()) > 1e-3


def test_the_buffer_never_exceeds_its_bound(tiny):
    store = ActivationStore(tiny, "resid_post", 0, TEXTS, batch_size=32, buffer_tokens=200, texts_per_forward=64, progress=False)
    n = sum(len(b) for b in store)
    assert store.buffer.shape[0] == 200 and 0 < store.peak_tokens <= 200
    assert n >= 32 * 10


def test_resume_yields_the_same_remaining_stream(tiny, tmp_path):
    kw = dict(batch_size=32, buffer_tokens=250, texts_per_forward=5, seed=3, progress=False)
    full = list(ActivationStore(tiny, "resid_pre", 1, TEXTS, **kw))
    first = ActivationStore(tiny, "resid_pre", 1, TEXTS, **kw)
    it = iter(first)
    head = [next(it) for _ in range(11)]  # stops mid-fill
    first.save(tmp_path / "store.pt")
    assert first.state_dict()["texts_read"] > 0 and first.state_dict()["batches_done"] > 0
    resumed = ActivationStore(tiny, "resid_pre", 1, iter(TEXTS), **kw)  # a fresh generator over the same source
    resumed.load(tmp_path / "store.pt")
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full):
        assert torch.equal(a, b)


def test_max_tokens_and_multi_site_reads(tiny):
    store = ActivationStore(tiny, reads=[("resid_mid", 0), ("mlp_out", 0)], texts=TEXTS, batch_size=16, buffer_tokens=200, max_tokens=80, progress=False)
    batches = list(store)
    assert len(batches) == 5 and batches[0].shape == (16, 2, 128)
    assert store.tokens_yielded == 80


def test_default_source_is_the_embedded_corpus(tiny):
    store = ActivationStore(tiny, "resid_pre", 0, batch_size=128, max_tokens=256, progress=False)
    assert sum(len(b) for b in store) == 256


def _dev_dependency(module: str):
    """Import ``module``, a declared [dev] dependency: a dev environment without it fails (never skips)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is a [dev] dependency (pyproject.toml) but is not installed: pip install -e '.[dev]'")


class _ColumnTable:
    """The part of the datasets.Dataset interface the store uses (column_names, rows by index)."""

    def __init__(self, columns: dict):
        self.columns = columns
        self.column_names = list(columns)

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


@pytest.mark.parametrize("source", ["datasets", "duck-typed"])
def test_a_dataset_is_read_by_column(tiny, source):
    cols = {"body": TEXTS[:10], "id": list(range(10))}
    if source == "datasets":
        ds = _dev_dependency("datasets").Dataset.from_dict(cols)
    else:
        ds = _ColumnTable(cols)
    a = torch.cat(list(ActivationStore(tiny, "resid_pre", 1, ds, column="body", batch_size=16, buffer_tokens=200, seed=1, progress=False)))
    b = torch.cat(list(ActivationStore(tiny, "resid_pre", 1, TEXTS[:10], batch_size=16, buffer_tokens=200, seed=1, progress=False)))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no column 'text'"):
        ActivationStore(tiny, "resid_pre", 1, ds)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="not one string"):
        ActivationStore(tiny, "resid_pre", 1, "The Eiffel Tower is in Paris.")
    with pytest.raises(ValueError, match="attn_pattern"):
        ActivationStore(tiny, "attn_pattern", 1, TEXTS)
    with pytest.raises(ValueError, match="too small"):
        ActivationStore(tiny, "resid_pre", 1, TEXTS, batch_size=64, buffer_tokens=100)
    with pytest.raises(ValueError, match="different widths"):
        ActivationStore(tiny, reads=[("resid_pre", 0), ("mlp_post", 0)], texts=TEXTS)
