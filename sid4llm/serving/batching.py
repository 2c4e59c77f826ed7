"""Dynamic batching: concurrent recommendation requests decoded as one batch of the trie search.

A request waits in a queue; one worker takes everything queued (up to ``max_batch_size`` users, waiting at
most ``max_wait_ms`` for more once the first has arrived) and decodes it in one call of
:meth:`SidRecommender.recommend`. While a batch decodes, the next one gathers, so throughput grows with load and
an idle server adds no more than ``max_wait_ms`` of latency. All model work — these batches and chat turns —
runs on one thread: the chat switches the adapter off and on, so two model calls must never overlap.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..pipeline import RecommendationPipeline

logger = logging.getLogger(__name__)


class ServerBusy(RuntimeError):
    """More requests are waiting than the queue holds."""


@dataclass
class RecommendJob:
    """One request: histories (codebook indices), ``k``, left-out items per history, and optionally a request in
    words per history (``style="request"``)."""

    histories: list[list[int]]
    k: int
    excludes: list[set[int]]
    exclude_history: bool = True
    texts: list[str] | None = None
    future: asyncio.Future = field(default=None, repr=False)
    dropped_because: str = "timeout"  # why it was cancelled before its batch, if it was: timeout or client_left

    @property
    def group(self) -> tuple:
        """Jobs decoded in one call share these: the call takes one ``k``, one style and one history rule."""
        return self.k, self.texts is not None, self.exclude_history


class RecommendBatcher:
    def __init__(self, pipe: RecommendationPipeline, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 max_queue: int = 1024, metrics=None, model_name: str = "model"):
        """``metrics``: a :class:`~sid4llm.serving.metrics.ServerMetrics` told the batch sizes, the queue depth and
        the requests dropped before their batch (labelled ``model_name``)."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.pipe = pipe
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sid4llm-model")
        self.batches = 0
        self.users = 0
        self._queue: asyncio.Queue[RecommendJob] | None = None
        self._worker: asyncio.Task | None = None
        self.metrics, self.model_name = metrics, model_name
        self.dropped = 0
        if metrics is not None:
            metrics.queue.labels(model=model_name).set_function(lambda: self.queued)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="sid4llm-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop (the server calls this after its in-flight requests are answered)."""
        if self._worker is not None:
            await self._queue.join()
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        self.executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # ------------------------------------------------------------------ requests
    async def recommend(self, job: RecommendJob) -> list[list[dict]]:
        """The job's lists, one per history, once its batch has been decoded."""
        if self._worker is None:
            raise RuntimeError("the batcher is not running (call start() first)")
        if self._queue.qsize() >= self.max_queue:
            raise ServerBusy(f"{self._queue.qsize()} requests are already waiting; try again shortly")
        job.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(job)
        return await job.future

    async def run_model(self, fn, *args, **kwargs):
        """Any other model call (a chat turn) on the model's thread, between batches."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ the worker
    async def _gather(self) -> list[RecommendJob]:
        jobs = [await self._queue.get()]
        users = len(jobs[0].histories)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while users < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            jobs.append(job)
            users += len(job.histories)
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            live = [job for job in jobs if not job.future.done()]  # a timed-out or abandoned request is not decoded
            for job in jobs:
                if job.future.done():
                    self.dropped += 1
                    if self.metrics is not None:
                        self.metrics.dropped.labels(model=self.model_name, reason=job.dropped_because).inc()
            try:
                if live:
                    outcomes = await loop.run_in_executor(self.executor, self._decode, live)
                    for job, outcome in zip(live, outcomes):
                        if job.future.done():
                            continue
                        if isinstance(outcome, BaseException):
                            job.future.set_exception(outcome)
                        else:
                            job.future.set_result(outcome)
            except Exception as err:  # never let the worker die: fail this batch's requests, keep serving
                logger.exception("batch failed")
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(err)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    def _decode(self, jobs: list[RecommendJob]) -> list[list[list[dict]] | BaseException]:
        """On the model thread: one :meth:`SidRecommender.recommend` call per group of jobs; if a group fails,
        its jobs are retried one by one, so only the request at fault gets the error."""
        outcomes: dict[int, list[list[dict]] | BaseException] = {}
        groups: dict[tuple, list[int]] = {}
        for n, job in enumerate(jobs):
            groups.setdefault(job.group, []).append(n)
        for members in groups.values():
            try:
                for n, lists in zip(members, self._call([jobs[n] for n in members])):
                    outcomes[n] = lists
            except Exception:
                for n in members:
                    try:
                        outcomes[n] = self._call([jobs[n]])[0]
                    except Exception as err:
                        outcomes[n] = err
        self.batches += 1
        users = sum(len(job.histories) for job in jobs)
        self.users += users
        if self.metrics is not None:
            self.metrics.batch_users.labels(model=self.model_name).observe(users)
        return [outcomes[n] for n in range(len(jobs))]

    def _call(self, jobs: list[RecommendJob]) -> list[list[list[dict]]]:
        histories = [h for job in jobs for h in job.histories]
        excludes = [e for job in jobs for e in job.excludes]
        texts = [t for job in jobs for t in job.texts] if jobs[0].texts is not None else None
        first = jobs[0]
        rec = self.pipe.recommender
        style = self.pipe.chat_style if texts is not None else "ids"
        results = rec.recommend(histories, k=min(first.k, len(self.pipe.codebook)), style=style,
                                exclude_seen=first.exclude_history, exclude=excludes, texts=texts,
                                batch_size=max(len(histories), 1))
        items = [[self.pipe.item(r["index"], r["score"]) for r in ranked] for ranked in results]
        out, start = [], 0
        for job in jobs:
            out.append(items[start : start + len(job.histories)])
            start += len(job.histories)
        return out
