"""The per-model lock (mi_widgets/core/model/lock.py): a background job (a PatchingGrid sweep, a
thread of traces) and traces from the main thread on the same model both finish, with the
numbers they have when run one after the other; re-entrant use does not deadlock; the lock is
released on exceptions; a waiting thread is told."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import mi_widgets as mw
from mi_widgets import wire
from mi_widgets.core.model.lock import ModelLock, on_wait

CLEAN = "The Eiffel Tower is in"
CORRUPT = "The Senso Temple is in"


@pytest.fixture(scope="module")
def model():
    return mw.load("zoo:tiny")  # its own instance: these tests hold its lock from threads


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens("The cat sat on the mat because it was")


def _read(model, tokens):
    return model.run(tokens, [("resid_post", 1), ("attn_pattern", 2)])


def _plain_logits(model, tokens):
    with torch.no_grad():
        return model.hf(tokens, attention_mask=torch.ones_like(tokens)).logits[0, -1].float()


def test_every_model_has_one_lock(model):
    assert isinstance(model.lock, ModelLock)
    assert mw.load("zoo:tiny").lock is not model.lock
    # a second Model over the same torch module shares nnsight's hooks on it, so its lock too
    assert mw.wrap(model.hf, model.tokenizer, "again").lock is model.lock


def test_background_sweep_and_main_thread_traces_give_sequential_numbers(model, tokens):
    metric = mw.logit_diff(" Paris", " Tokyo")
    result = mw.activation_patching(model, CLEAN, CORRUPT, metric, positions="each", progress=False)
    ref_reads = _read(model, tokens)
    ref_logits = _plain_logits(model, tokens)
    seq = result.widget()
    seq.sweep("head_out")
    ref_grid = wire.decode(seq.values).copy()

    w = result.widget()
    w.sweep("head_out", background=True)
    overlapped = 0
    deadline = time.monotonic() + 60
    while w.status == "running" or (w._thread is not None and w._thread.is_alive()):
        alive = w._thread.is_alive()
        reads = _read(model, tokens)  # nnsight trace
        logits = _plain_logits(model, tokens)  # torch-direct forward
        overlapped += alive and w._thread.is_alive()
        for key, v in ref_reads.items():
            assert torch.equal(reads[key], v), key
        assert torch.allclose(logits, ref_logits, atol=1e-5)
        assert time.monotonic() < deadline, "the sweep did not finish"
    w.wait()
    assert w.status == "ready", w.error
    assert overlapped >= 1, "no main-thread trace ran while the sweep was running; the test proved nothing"
    assert torch.allclose(torch.from_numpy(wire.decode(w.values).copy()), torch.from_numpy(ref_grid), atol=1e-5)


def test_two_threads_of_traces_and_generation(model, tokens):
    ref = _read(model, tokens)
    with torch.no_grad(), model.nn.generate(tokens, max_new_tokens=4, do_sample=False) as tracer:
        ref_gen = tracer.result.save()
    errors: list[str] = []
    gens: list[torch.Tensor] = []

    def worker() -> None:
        try:
            for _ in range(8):
                with torch.no_grad(), model.nn.generate(tokens, max_new_tokens=4, do_sample=False) as tr:
                    out = tr.result.save()
                gens.append(out)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(15):
        got = _read(model, tokens)
        for key, v in ref.items():
            assert torch.equal(got[key], v)
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(gens) == 16 and all(torch.equal(g, ref_gen) for g in gens)


def test_reentrant_use_does_not_deadlock(model, tokens):
    done = threading.Event()

    def nested() -> None:
        with model.lock:  # a method holding the lock calls others that take it again
            with torch.no_grad(), model.nn.session():
                with model.nn.trace(tokens):
                    a = model.nn.output.logits.save()
                with model.nn.trace(tokens):
                    b = model.nn.output.logits.save()
            _read(model, tokens)
            model.next_tokens("The cat", k=3)
            assert torch.equal(a, b)
        done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set(), "nested use of the lock deadlocked"
    assert not model.lock.held and not model.lock.busy


def test_lock_released_when_the_block_raises(model, tokens):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with torch.no_grad(), model.nn.trace(tokens):
                model.nn.output.logits.save()
                raise exc
        assert not model.lock.held
    with pytest.raises(ValueError):  # the model itself fails (bad site inside the trace)
        model.run(tokens, [("nope", 0)])
    # another thread can take it at once
    got = threading.Event()
    t = threading.Thread(target=lambda: (model.lock.acquire(), got.set(), model.lock.release()))
    t.start()
    t.join(5)
    assert got.is_set()


def test_a_waiting_thread_is_told(model, tokens):
    seen: list[bool] = []
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with model.lock:
            holding.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    holding.wait(5)
    assert model.lock.busy
    threading.Timer(0.3, release.set).start()
    with on_wait(seen.append):
        _read(model, tokens)
    t.join()
    assert seen == [True, False]
    seen.clear()
    with on_wait(seen.append):
        _read(model, tokens)  # free: no wait, no callback
    assert seen == []


def test_the_locked_module_still_looks_and_pickles_like_its_class(model, tokens, tmp_path):
    import pickle

    from transformers import GPT2LMHeadModel

    hf = model.hf
    assert isinstance(hf, GPT2LMHeadModel) and type(hf).__name__ == "GPT2LMHeadModel"
    copy = pickle.loads(pickle.dumps(hf))  # torch.save(model.hf) pickles it
    assert type(copy) is GPT2LMHeadModel
    assert torch.allclose(_plain_logits(model, tokens), copy(tokens, attention_mask=torch.ones_like(tokens)).logits[0, -1])
    hf.save_pretrained(tmp_path)
    assert '"GPT2LMHeadModel"' in (tmp_path / "config.json").read_text()
