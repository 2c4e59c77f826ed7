"""The model versions a server holds: each a pipeline with its own batcher, one of them the default. A new
version loads beside the others while they keep serving (in a thread), then takes requests; a request keeps the
version it started on until it is answered, and a version replaced or removed is stopped only once its in-flight
requests are done. So a new adapter rolls in with no request lost."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline import RecommendationPipeline
from .batching import RecommendBatcher
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)


def served_name(source: str) -> str:
    """The name a model is served under when none is given: a local folder's name (never its path on the
    server's disk), or the Hub id."""
    path = Path(source)
    return path.resolve().name if path.exists() else source


@dataclass
class ServedModel:
    name: str
    pipe: RecommendationPipeline
    batcher: RecommendBatcher
    created: int = field(default_factory=lambda: int(time.time()))
    in_flight: int = 0


class UnknownModel(KeyError):
    """A request named a model this server does not hold."""


class ModelRegistry:
    def __init__(self, settings, metrics: ServerMetrics,
                 loader: Callable[[str], RecommendationPipeline] | None = None):
        """``loader``: builds a pipeline from a folder or Hub id (default: ``RecommendationPipeline.from_pretrained``
        on the settings' device)."""
        self.settings, self.metrics = settings, metrics
        self.loader = loader or (lambda source: RecommendationPipeline.from_pretrained(source, device=settings.device))
        self.models: dict[str, ServedModel] = {}
        self.default: str | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ serving
    def get(self, name: str | None = None) -> ServedModel:
        """The model a request names (the default when it names none)."""
        found = self.models.get(name if name is not None else self.default)
        if found is None:
            raise UnknownModel(name)
        return found

    @contextmanager
    def using(self, served: ServedModel) -> Iterator[ServedModel]:
        """Count a request in flight on ``served`` while it is answered (a replaced version waits for it)."""
        served.in_flight += 1
        try:
            yield served
        finally:
            served.in_flight -= 1

    # ------------------------------------------------------------------ versions
    async def add(self, name: str, pipe: RecommendationPipeline, make_default: bool = True) -> ServedModel:
        """Serve ``pipe`` as ``name``: its batcher starts, and it becomes the default when asked (or when it is the
        first). A version already served under ``name`` is replaced, and stopped once its requests are answered."""
        s = self.settings
        batcher = RecommendBatcher(pipe, s.max_batch_size, s.max_wait_ms, s.max_queue, metrics=self.metrics,
                                   model_name=name)
        await batcher.start()
        served = ServedModel(name, pipe, batcher)
        async with self._lock:
            replaced = self.models.get(name)
            self.models[name] = served
            if make_default or self.default is None:
                self.default = name
            self.metrics.show_models(list(self.models), self.default)
        if replaced is not None:
            asyncio.create_task(self._retire(replaced))
        logger.info("serving %s (%d items)%s", name, len(pipe.codebook), " as the default" if self.default == name else "")
        return served

    async def load(self, source: str, name: str | None = None, make_default: bool = True) -> ServedModel:
        """Load a folder or Hub id in a thread (the others keep serving meanwhile), then :meth:`add` it."""
        try:
            pipe = await asyncio.get_running_loop().run_in_executor(None, self.loader, source)
        except Exception:
            self.metrics.swaps.labels(outcome="failed").inc()
            raise
        self.metrics.swaps.labels(outcome="loaded").inc()
        return await self.add(name or served_name(source), pipe, make_default)

    async def remove(self, name: str) -> None:
        """Stop serving ``name`` (not the default) once its in-flight requests are answered."""
        async with self._lock:
            if name not in self.models:
                raise UnknownModel(name)
            if name == self.default:
                raise ValueError(f"{name!r} is the default model: make another the default first")
            served = self.models.pop(name)
            self.metrics.show_models(list(self.models), self.default)
        await self._retire(served)

    async def _retire(self, served: ServedModel) -> None:
        """Stop a version once its in-flight requests are answered, and give its memory back: its weights are
        dropped, the cycles that hold them collected, and the C heap trimmed (glibc keeps freed memory otherwise)."""
        while served.in_flight:
            await asyncio.sleep(0.05)
        await served.batcher.stop()
        if served.name not in self.models:  # removed, not replaced: its queue gauge goes too (it holds the batcher)
            self.metrics.queue.remove(served.name)
        served.pipe = served.batcher = None
        gc.collect()
        release_freed_memory()
        logger.info("stopped serving the replaced version of %s", served.name)

    async def close(self) -> None:
        for served in list(self.models.values()):
            await served.batcher.stop()


def release_freed_memory() -> None:
    """Return the C heap's free memory to the system where the C library can (glibc's ``malloc_trim``)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
