"""The workers' own view during a rate: queue, running batch, KV usage, MTP acceptance, from their /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

GAUGES = {
    "mimo_worker_running_requests": "running",
    "mimo_worker_waiting_requests": "waiting",
    "mimo_worker_kv_usage_ratio": "kv_usage",
}
COUNTERS = (
    "mimo_worker_spec_draft_tokens_total",
    "mimo_worker_spec_accepted_tokens_total",
    "mimo_worker_generated_tokens_total",
    "mimo_worker_prompt_tokens_total",
)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample of the MiMo worker families in one worker's exposition (summed over labels)."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("mimo_worker_") and not sample.name.endswith("_created"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


class WorkerWatch:
    """Samples the workers' gauges every `every_s` while a rate runs; counters are differenced over the rate."""

    def __init__(self, urls: Sequence[str], every_s: float = 0.5) -> None:
        self.urls, self.every_s = list(urls), every_s
        self._samples: list[dict[str, float]] = []
        self._first: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _total(self) -> dict[str, float]:
        assert self._session is not None
        totals: dict[str, float] = {}
        for values in await asyncio.gather(*(scrape(self._session, u) for u in self.urls)):
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
        return totals

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self._samples.append(await self._total())

    async def start(self) -> None:
        if not self.urls:
            return
        self._session = aiohttp.ClientSession()
        self._samples, self._first = [], await self._total()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        """Mean and peak of each gauge over the samples (summed over workers); MTP acceptance over the rate."""
        if self._task is None or self._session is None:
            return {}
        self._task.cancel()
        last = await self._total()
        await self._session.close()
        self._task = None
        view: dict[str, float] = {}
        for metric, short in GAUGES.items():
            series = [s.get(metric, 0.0) for s in self._samples] or [last.get(metric, 0.0)]
            scale = 1 / len(self.urls) if short == "kv_usage" else 1.0  # usage: mean over workers
            view[f"{short}_mean"] = scale * sum(series) / len(series)
            view[f"{short}_max"] = scale * max(series)
        delta = {c: last.get(c, 0.0) - self._first.get(c, 0.0) for c in COUNTERS}
        draft = delta["mimo_worker_spec_draft_tokens_total"]
        if draft > 0:
            view["mtp_accept_rate"] = delta["mimo_worker_spec_accepted_tokens_total"] / draft
        view["generated_tokens"] = delta["mimo_worker_generated_tokens_total"]
        view["prompt_tokens"] = delta["mimo_worker_prompt_tokens_total"]
        return view
