"""Fixtures shared by the views' tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def reply() -> Callable[..., dict]:
    """``reply(view, name, msg)``: the ``mw-response`` the view sends for a browser request."""

    def ask(w, name: str, msg: dict) -> dict:
        sent: list[dict] = []
        w.send = lambda content, buffers=None: sent.append(content)
        w._on_custom_msg(w, {"kind": "mw-request", "id": "x", "name": name, "msg": msg}, [])
        return sent[-1]

    return ask
