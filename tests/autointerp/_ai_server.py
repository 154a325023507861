"""A local OpenAI-compatible chat-completions server with scripted replies (127.0.0.1 only,
shut down by its fixture), for the autointerp tests."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_reply(content: str, logprobs: list | None = None) -> dict:
    """A chat-completions response body; ``logprobs``: ``[(token, [(alt, logprob), ...]), ...]``."""
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": alts[0][1] if alts else 0.0,
             "top_logprobs": [{"token": a, "logprob": lp} for a, lp in alts]} for t, alts in logprobs]}
    return {"id": "x", "object": "chat.completion", "model": "scripted", "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


class ScriptedServer:
    """``script(body: dict, n: int) -> reply``, where a reply is a dict (sent as JSON, 200),
    ``(status, headers, bytes_or_dict)``, or ``("sleep", seconds, reply)``. ``requests`` keeps
    every request body and its headers."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script = lambda body, n: chat_reply("ok")
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    n = len(server.requests)
                reply = server.script(body, n)
                if isinstance(reply, tuple) and reply and reply[0] == "sleep":
                    time.sleep(reply[1])
                    reply = reply[2]
                status, headers, payload = (200, {}, reply) if not isinstance(reply, tuple) else reply
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)




def oracle(lexicon: dict[str, list[str]], *, logprobs: bool = False):
    """A script that answers the scoring prompts of mi_widgets.core.autointerp.scoring the way
    RuleSimulator(lexicon) judges: it reads the explanation from the prompt, looks its phrase up
    in ``lexicon`` and judges tokens by membership. With ``logprobs`` each number comes with
    top_logprobs (0.8/0.2 on the answer and a neighbour)."""
    import ast
    import math
    import re

    def words_of(expl: str) -> set[str]:
        for phrase, ws in sorted(lexicon.items(), key=lambda kv: -len(kv[0])):
            if phrase in expl.lower():
                return {w.lower() for w in ws}
        return set()

    def reply(nums: list[int], sep: str = ",") -> dict:
        if not logprobs:
            return chat_reply(sep.join(str(n) for n in nums))
        toks = []
        for i, n in enumerate(nums):
            if i:
                toks.append((sep, [(sep, 0.0)]))
            other = 0 if n else 1
            toks.append((str(n), [(str(n), math.log(0.8)), (str(other), math.log(0.2)), ("x", math.log(1e-3))]))
        return chat_reply(sep.join(str(n) for n in nums), toks)

    def script(body: dict, n: int):
        user = body["messages"][-1]["content"]
        expl = re.search(r"Explanation of the feature: (.*)", user).group(1)
        ws = words_of(expl)
        hit = lambda tok: tok.strip().lower() in ws  # noqa: E731
        if "one token per line" in user:
            toks = [ast.literal_eval(line.split("\t", 1)[1]) for line in user.splitlines() if re.match(r"^\d+\t", line)]
            return reply([10 if hit(t) else 0 for t in toks])
        if "Next tokens A" in user:
            a = ast.literal_eval("[" + re.search(r"Next tokens A: (.*)", user).group(1) + "]")
            b = ast.literal_eval("[" + re.search(r"Next tokens B: (.*)", user).group(1) + "]")
            sa, sb = sum(map(hit, a)) / len(a), sum(map(hit, b)) / len(b)
            ans = "A" if sa > sb else "B" if sb > sa else "?"
            if logprobs and ans != "?":
                other = "B" if ans == "A" else "A"
                return chat_reply(ans, [(ans, [(ans, math.log(0.9)), (other, math.log(0.1))])])
            return chat_reply(ans)
        lines = [line.split(". ", 1)[1] for line in user.splitlines() if re.match(r"^\d+\. ", line)]
        if "marked <<like this>>" in user:
            out = []
            for line in lines:
                marked = re.findall(r"<<(.*?)>>", line)
                out.append(int(sum(map(hit, marked)) / max(len(marked), 1) >= 0.5))
            return reply(out)
        return reply([int(any(w in re.findall(r"[A-Za-z]+", line.lower()) for w in ws)) for line in lines])

    return script
