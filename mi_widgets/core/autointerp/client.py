"""Language models that write and judge explanations: any OpenAI-compatible chat-completions
endpoint (:class:`OpenAIClient`: vLLM, Ollama, llama.cpp's server, hosted APIs) or a local
causal LM loaded with ``mw.load`` (:class:`LocalLM`, greedy decoding).

Both answer ``complete(messages, max_tokens=..., top_logprobs=0) -> Completion``. A
``Completion`` holds the reply's text and, where the endpoint returned them, the reply's tokens
with their ``top_logprobs`` (``[(token, [(alternative, logprob), ...]), ...]``).

:class:`OpenAIClient` uses only the standard library (``urllib``). It retries on HTTP 429 and
5xx and on connection errors (refused, dropped without a reply), waiting ``backoff * 2**attempt`` seconds or the server's
``Retry-After`` (both capped by ``max_wait``), at most ``retries`` times; a timeout, a reply that
is not JSON or lacks ``choices[0].message.content`` raises :class:`LMError` with a short reason.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Protocol


class LMError(RuntimeError):
    """A language model call failed (after retries): the reason, short."""


@dataclass
class Completion:
    """A reply: ``text`` and, where returned, per-token ``logprobs``:
    ``[(token, [(alternative, logprob), ...]), ...]`` (alternatives: ``top_logprobs``)."""

    text: str
    logprobs: list[tuple[str, list[tuple[str, float]]]] | None = None
    usage: dict = field(default_factory=dict)


class LM(Protocol):
    """What explain/score need from a language model."""

    name: str

    def complete(self, messages: list[dict], *, max_tokens: int = 256, top_logprobs: int = 0) -> Completion: ...


def check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ValueError(f"each message must be {{'role': 'system'|'user'|'assistant', 'content': str}}, got {m!r}")
    return messages


class OpenAIClient:
    """A chat-completions endpoint: ``OpenAIClient("http://127.0.0.1:8000/v1", model="...")``.

    ``base_url`` ends before ``/chat/completions`` (``https://api.openai.com/v1``,
    ``http://localhost:11434/v1`` for Ollama, ``http://localhost:8000/v1`` for vLLM).
    ``api_key`` is sent as a bearer token when given. ``timeout`` seconds per request;
    ``retries``/``backoff``/``max_wait`` bound the retries (see the module docstring).
    Decoding is greedy (``temperature=0``) unless ``temperature`` says otherwise.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
        retries: int = 4, backoff: float = 1.0, max_wait: float = 30.0, temperature: float = 0.0,
        extra: dict | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://localhost:8000/v1', got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError("model must be the endpoint's model name (a non-empty string)")
        if timeout <= 0 or retries < 0 or backoff < 0 or max_wait < 0:
            raise ValueError("timeout must be > 0; retries, backoff and max_wait >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.api_key = api_key
        self.timeout, self.retries, self.backoff, self.max_wait = float(timeout), int(retries), float(backoff), float(max_wait)
        self.temperature = float(temperature)
        self.extra = dict(extra or {})
        self.calls = 0  # requests sent (retries included)

    def __repr__(self) -> str:
        return f"OpenAIClient({self.base_url!r}, model={self.model!r})"

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        w = self.backoff * (2**attempt)
        if retry_after:
            try:
                w = float(retry_after)
            except ValueError:
                pass
        return max(0.0, min(w, self.max_wait))

    def complete(self, messages: list[dict], *, max_tokens: int = 256, top_logprobs: int = 0) -> Completion:
        check_messages(messages)
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": int(max_tokens),
                                "temperature": self.temperature, **self.extra}
        if top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = int(top_logprobs)
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url + "/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            self.calls += 1
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                return _parse(raw)
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace")
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code == 429 or e.code >= 500:
                    if attempt < self.retries:
                        time.sleep(self._wait(attempt, e.headers.get("Retry-After")))
                        continue
                    raise LMError(f"{last} (after {attempt + 1} tries)") from None
                raise LMError(last) from None
            except TimeoutError:
                raise LMError(f"no reply from {url} within {self.timeout:g} s") from None
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    raise LMError(f"no reply from {url} within {self.timeout:g} s") from None
                last = f"cannot reach {url}: {reason}"
                if attempt < self.retries:
                    time.sleep(self._wait(attempt, None))
                    continue
                raise LMError(f"{last} (after {attempt + 1} tries)") from None
        raise LMError(last)  # pragma: no cover


def _parse(raw: bytes) -> Completion:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LMError(f"the endpoint replied with malformed JSON: {raw[:80]!r}") from None
    try:
        choice = obj["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise LMError(f"the reply has no choices[0].message.content: {str(obj)[:120]}") from None
    lp = None
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if isinstance(content, list):
        lp = []
        for t in content:
            alts = [(str(a.get("token", "")), float(a.get("logprob", -1e9))) for a in (t.get("top_logprobs") or [])]
            lp.append((str(t.get("token", "")), alts))
    return Completion(text=text, logprobs=lp, usage=obj.get("usage") or {})


class LocalLM:
    """A causal LM loaded with ``mw.load`` (or any :class:`~mi_widgets.core.model.Model`),
    decoding greedily. The messages become the tokenizer's chat template where it has one, else
    plain text (``system``/``user`` contents, then ``"\\n"``). ``top_logprobs`` is honoured:
    each generated token comes with its ``top_logprobs`` alternatives."""

    def __init__(self, model: Any, *, max_context: int | None = None) -> None:
        for a in ("hf", "tokenizer", "name"):
            if not hasattr(model, a):
                raise TypeError(f"LocalLM takes a model from mw.load (with .hf, .tokenizer, .name), got {type(model).__name__}")
        self.model = model
        self.name = f"local:{model.name}"
        n_pos = getattr(model.hf.config, "n_positions", None) or getattr(model.hf.config, "max_position_embeddings", 2048)
        self.max_context = int(max_context or n_pos)

    def __repr__(self) -> str:
        return f"LocalLM({self.model.name!r})"

    def _prompt_ids(self, messages: list[dict]) -> Any:
        import torch

        tok = self.model.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            if not isinstance(ids, torch.Tensor):
                ids = ids["input_ids"]
        else:
            text = "\n".join(m["content"] for m in messages) + "\n"
            ids = tok(text, return_tensors="pt")["input_ids"]
        return ids

    def complete(self, messages: list[dict], *, max_tokens: int = 256, top_logprobs: int = 0) -> Completion:
        import torch

        check_messages(messages)
        ids = self._prompt_ids(messages)
        keep = max(1, self.max_context - int(max_tokens))
        ids = ids[:, -keep:].to(self.model.device)
        hf, tok = self.model.hf, self.model.tokenizer
        out, lps = [], []
        past = None
        cur = ids
        # transformers 5 names the KV cache `cache` (older releases: `past_key_values`)
        import inspect

        kv = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
        with torch.no_grad():
            for _ in range(int(max_tokens)):
                if ids.shape[1] + len(out) > self.max_context:
                    break
                n_seen = ids.shape[1] + len(out)
                res = hf(input_ids=cur, attention_mask=torch.ones(1, n_seen, dtype=torch.long, device=ids.device),
                         use_cache=True, **{kv: past})
                past = getattr(res, kv, None)
                logp = torch.log_softmax(res.logits[0, -1].float(), -1)
                nxt = int(logp.argmax())
                if tok.eos_token_id is not None and nxt == tok.eos_token_id:
                    break
                if top_logprobs:
                    v, i = torch.topk(logp, int(top_logprobs))
                    lps.append((tok.decode([nxt]), [(tok.decode([int(j)]), float(x)) for x, j in zip(v, i)]))
                out.append(nxt)
                cur = torch.tensor([[nxt]], device=ids.device)
        return Completion(text=tok.decode(out), logprobs=lps if top_logprobs else None)
