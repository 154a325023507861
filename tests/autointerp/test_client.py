"""The chat-completions client (mi_widgets/core/autointerp/client.py) against a real HTTP
server on 127.0.0.1 with scripted replies: the request it sends, retries with backoff on 429 and
5xx (Retry-After honoured, bounded), no retry on 4xx, timeouts, malformed replies; and the
local-LM path on zoo:tiny."""

from __future__ import annotations

import time

import pytest
from _ai_server import chat_reply

from mi_widgets.core.autointerp.client import LMError, LocalLM, OpenAIClient

MSG = [{"role": "user", "content": "hi"}]


def test_sends_the_openai_request_and_reads_the_reply(server):
    server.script = lambda body, n: chat_reply("Paris", [("Paris", [("Paris", -0.1), ("Rome", -2.4)])])
    c = OpenAIClient(server.url, "m1", api_key="sk-test", temperature=0.0)
    r = c.complete(MSG, max_tokens=7, top_logprobs=2)
    assert r.text == "Paris"
    assert r.logprobs == [("Paris", [("Paris", -0.1), ("Rome", -2.4)])]
    body = server.requests[0]
    assert body["model"] == "m1" and body["messages"] == MSG and body["max_tokens"] == 7
    assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["temperature"] == 0.0
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    # without top_logprobs the request asks for none and the reply carries none
    server.script = lambda body, n: chat_reply("x")
    assert c.complete(MSG).logprobs is None and "logprobs" not in server.requests[1]


def test_retries_429_honouring_retry_after_then_succeeds(server):
    server.script = lambda body, n: (429, {"Retry-After": "0.3"}, {"error": "slow down"}) if n < 3 else chat_reply("done")
    c = OpenAIClient(server.url, "m", retries=3, backoff=0.01, max_wait=5)
    t = time.monotonic()
    assert c.complete(MSG).text == "done"
    took = time.monotonic() - t
    assert len(server.requests) == 3
    assert 0.55 <= took < 3.0, took  # two waits of Retry-After = 0.3 s, not the 0.01 s backoff


def test_retry_after_is_capped_by_max_wait(server):
    server.script = lambda body, n: (503, {"Retry-After": "120"}, b"busy") if n == 1 else chat_reply("ok")
    c = OpenAIClient(server.url, "m", retries=2, backoff=0.01, max_wait=0.2)
    t = time.monotonic()
    assert c.complete(MSG).text == "ok"
    assert time.monotonic() - t < 2.0


def test_gives_up_after_the_retries_with_a_clear_error(server):
    server.script = lambda body, n: (500, {}, b"internal")
    c = OpenAIClient(server.url, "m", retries=2, backoff=0.01)
    with pytest.raises(LMError, match=r"HTTP 500.*after 3 tries"):
        c.complete(MSG)
    assert len(server.requests) == 3


def test_a_dropped_connection_is_retried(server):
    def script(body, n):
        if n == 1:
            raise ConnectionAbortedError("scripted: close without replying")
        return chat_reply("second try")

    server.script = script
    assert OpenAIClient(server.url, "m", retries=1, backoff=0.01).complete(MSG).text == "second try"
    assert len(server.requests) == 2


def test_client_errors_are_not_retried(server):
    server.script = lambda body, n: (401, {}, {"error": "bad key"})
    c = OpenAIClient(server.url, "m", retries=3, backoff=0.01)
    with pytest.raises(LMError, match="HTTP 401"):
        c.complete(MSG)
    assert len(server.requests) == 1


def test_timeout_is_a_clear_error(server):
    server.script = lambda body, n: ("sleep", 1.5, chat_reply("late"))
    c = OpenAIClient(server.url, "m", timeout=0.3, retries=0)
    t = time.monotonic()
    with pytest.raises(LMError, match="within 0.3 s"):
        c.complete(MSG)
    assert time.monotonic() - t < 1.4


@pytest.mark.parametrize("payload,match", [
    (b"{not json", "malformed JSON"),
    ({"choices": []}, "no choices"),
    ({"choices": [{"message": {"content": None}}]}, "no choices"),
])
def test_malformed_replies_are_clear_errors(server, payload, match):
    server.script = lambda body, n: (200, {}, payload)
    with pytest.raises(LMError, match=match):
        OpenAIClient(server.url, "m", retries=0).complete(MSG)


def test_bad_arguments_raise_before_any_request(server):
    with pytest.raises(ValueError, match="base_url"):
        OpenAIClient("localhost:8000", "m")
    with pytest.raises(ValueError, match="model"):
        OpenAIClient(server.url, "")
    c = OpenAIClient(server.url, "m")
    with pytest.raises(ValueError, match="each message"):
        c.complete([{"role": "robot", "content": "x"}])
    with pytest.raises(TypeError, match="mw.load"):
        LocalLM("gpt2")
    assert server.requests == []


def test_local_lm_decodes_greedily(tiny):
    """zoo:tiny completes a fact as its greedy next tokens (the top next token of the prompt
    comes first), with top_logprobs that are log-probabilities."""
    lm = LocalLM(tiny)
    prompt = "The Eiffel Tower is in"
    r = lm.complete([{"role": "user", "content": prompt}], max_tokens=3, top_logprobs=3)
    # no chat template: the prompt is the content plus a newline; compare with next_tokens there
    assert len(r.logprobs) >= 1 and r.logprobs[0][0] == r.logprobs[0][1][0][0]
    assert all(lp <= 0 for _, alts in r.logprobs for _, lp in alts)
    again = lm.complete([{"role": "user", "content": prompt}], max_tokens=3)
    assert again.text == r.text and again.logprobs is None
    # the KV-cached decoding equals argmax over full forwards of the growing sequence
    import torch

    ids = tiny.tokenizer(prompt + "\n", return_tensors="pt")["input_ids"]
    want = []
    with torch.no_grad():
        for _ in range(3):
            nxt = int(tiny.hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].argmax())
            if nxt == tiny.tokenizer.eos_token_id:
                break
            want.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert want and r.text == tiny.tokenizer.decode(want)
