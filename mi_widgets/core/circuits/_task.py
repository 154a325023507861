"""A circuit task: validated clean/corrupt pairs, a metric, and the cached runs every circuit
method evaluates edge masks against (one batched forward per mask chunk)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._checks import check_model
from ..interventions.batching import _groups, _progress
from ..interventions.checks import _validate_pairs
from ..metrics import Metric
from ..model import Model
from ._graph import Net
from ._hooknet import HookNet, check_supported

#: memory for one chunk of masked rows (corrupt outputs, this run's outputs, differences)
_CHUNK_BYTES = 256 * 2**20


def _check_model(model: Any, what: str) -> None:
    check_model(model)
    if isinstance(model, Model) and model.remote:
        raise ValueError(f"{what} runs local models only (it recomputes the blocks from their weights)")
    if isinstance(model, Model) and not _functional(model):
        check_supported(model, what)  # the family's graph runs on its modules: refuse what it cannot


def _functional(model: Model) -> bool:
    """GPT-2 models run on the functional forward of :mod:`._graph` (faster); the others on hooks."""
    return model.family == "gpt2" and getattr(model.hf.config, "model_type", "") == "gpt2"


class Task:
    """Clean/corrupt prompt pairs, a metric, the model's edge graph, and cached runs."""

    def __init__(
        self,
        model: Model,
        clean: str | Sequence[str],
        corrupt: str | Sequence[str],
        metric: Metric | Callable[[torch.Tensor], torch.Tensor],
        what: str,
        batch_size: int | None = None,
    ):
        _check_model(model, what)
        spec = _validate_pairs(model, clean, corrupt, metric, "resid_pre", "all", "all", "noise", "all", what)
        _check_model(model, what)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.model = model
        self.spec = spec
        self.metric: Metric = spec.metric
        self.net: Net | HookNet = Net(model) if _functional(model) else HookNet(model, what)
        self.graph = self.net.graph
        self.groups = _groups(spec.lengths)
        self.batch_size = batch_size
        self.n = spec.n
        dev = model.device
        self.clean_ids = {t: torch.cat([spec.ctoks[i] for i in idx]).to(dev) for t, idx in self.groups.items()}
        self.corrupt_ids = {t: torch.cat([spec.xtoks[i] for i in idx]).to(dev) for t, idx in self.groups.items()}
        self._corrupt_outs: dict[int, torch.Tensor] = {}
        self.clean_logits = torch.empty(self.n, model.d_vocab)
        self.corrupt_logits = torch.empty(self.n, model.d_vocab)
        self._ready = False

    @property
    def pairs_clean(self) -> list[str]:
        return self.spec.clean

    def prepare(self) -> None:
        """Run clean and corrupt once (cached): baselines and the corrupt sender outputs."""
        if self._ready:
            return
        for t, idx in self.groups.items():
            lc, _ = self.net.run(self.net.embed(self.clean_ids[t]))
            lx, outs = self.net.run(self.net.embed(self.corrupt_ids[t]), record=True)
            self.clean_logits[idx] = lc.float().cpu()
            self.corrupt_logits[idx] = lx.float().cpu()
            self._corrupt_outs[t] = outs  # type: ignore[assignment]
        allp = torch.arange(self.n)
        self.m_clean = self.metric(self.clean_logits, pairs=allp, clean_logits=self.clean_logits).float()
        self.m_corrupt = self.metric(self.corrupt_logits, pairs=allp, clean_logits=self.clean_logits).float()
        self._ready = True

    @property
    def clean_metric(self) -> float:
        self.prepare()
        return float(self.m_clean.mean())

    @property
    def corrupt_metric(self) -> float:
        self.prepare()
        return float(self.m_corrupt.mean())

    def normalise(self, m: torch.Tensor | float) -> torch.Tensor | float:
        """``(m - m_corrupt) / (m_clean - m_corrupt)`` on pair means (1 = clean, 0 = corrupt)."""
        gap = self.clean_metric - self.corrupt_metric
        if abs(gap) < 1e-9:
            raise ValueError(
                f"{self.metric.name} is the same on the clean and corrupt runs ({self.clean_metric:.6g}), "
                "so faithfulness (m - m_corrupt) / (m_clean - m_corrupt) is undefined; pick pairs the model answers differently"
            )
        return (m - self.corrupt_metric) / gap

    def _rows(self, T: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        per_row = 4 * self.graph.n_senders * T * self.net.d * 4
        return max(1, _CHUNK_BYTES // per_row)

    def evaluate(
        self,
        masks: torch.Tensor | tuple[int, Callable[[torch.Tensor], torch.Tensor]],
        *,
        progress: bool = False,
        desc: str = "patching edges",
    ) -> torch.Tensor:
        """Mean metric over pairs of the clean run with edges corrupted by each of ``masks``
        ``[K, S, R]`` (1 = the receiver hears the corrupt sender output): ``[K]``. ``masks``
        may also be ``(K, fn)`` with ``fn(ks) -> [len(ks), S, R]`` built per chunk."""
        self.prepare()
        if isinstance(masks, torch.Tensor):
            K, dense = masks.shape[0], masks
            mask_of = lambda ks: dense[ks]  # noqa: E731
        else:
            K, mask_of = masks
        total = torch.zeros(K, dtype=torch.float64)
        plan = []
        for t, idx in self.groups.items():
            rows = [(k, g) for k in range(K) for g in range(len(idx))]
            per = self._rows(t)
            plan += [(t, rows[i : i + per]) for i in range(0, len(rows), per)]
        bar = _progress(len(plan), progress and len(plan) > 1, desc)
        dev = self.model.device
        try:
            for t, rows in plan:
                idx = self.groups[t]
                ks = torch.tensor([r[0] for r in rows])
                gs = torch.tensor([r[1] for r in rows])
                ids = self.clean_ids[t][gs.to(dev)]
                corrupt = self._corrupt_outs[t][gs.to(dev)]
                m = mask_of(ks).to(dev)
                logits, _ = self.net.run(self.net.embed(ids), corrupt=corrupt, mask=m)
                pairs = torch.tensor(idx)[gs]
                vals = self.metric(
                    logits.float(), pairs=pairs.to(logits.device), clean_logits=self.clean_logits[pairs].to(logits.device)
                )
                total.index_add_(0, ks, vals.double().cpu())
                bar.update(1)
        finally:
            bar.close()
        return (total / self.n).float()

    def edge_mask(self, edges: torch.Tensor) -> torch.Tensor:
        """``[S, R]`` mask with 1 at the given edge indices."""
        g = self.graph
        m = torch.zeros(g.n_senders, g.n_receivers)
        m[g.edge_s[edges], g.edge_r[edges]] = 1.0
        return m

    def keep_masks(self, keeps: torch.Tensor) -> torch.Tensor:
        """Masks ``[K, S, R]`` corrupting every edge *not* kept: ``keeps`` ``[K, E]`` bool."""
        g = self.graph
        out = torch.zeros(keeps.shape[0], g.n_senders, g.n_receivers)
        out[:, g.edge_s, g.edge_r] = (~keeps).float()
        return out
