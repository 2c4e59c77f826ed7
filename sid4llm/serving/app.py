"""The HTTP service around one or more :class:`RecommendationPipeline` versions (FastAPI on uvicorn).

    POST /v1/recommend          {"history": [...], "k": 10, "exclude": [...]}  (or "histories" for a batch)
    POST /v1/chat/completions   the OpenAI chat-completions request; the answer also lists its items as data
    GET  /v1/models             the versions served, OpenAI-style (one is the default)
    POST /v1/admin/models       load a folder or Hub id while serving; DELETE /v1/admin/models/{name} removes one
    GET  /health                open: status, the default version, catalogue size (never a path)
    GET  /metrics               open: Prometheus metrics

With ``--api_key`` every ``/v1/*`` call needs ``Authorization: Bearer KEY`` (:mod:`.auth`). Every error is
``{"error": {"message", "type", "param"}}`` with a 4xx status that names the field at fault (5xx only for a
timeout, a full queue or a bug); a failing request never affects another one, and a request whose client hangs up
while it waits is dropped from its batch, not computed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..pipeline import RecommendationPipeline
from .auth import ApiKeyAuth
from .batching import RecommendJob, ServerBusy
from .metrics import ServerMetrics
from .registry import ModelRegistry, ServedModel, UnknownModel, served_name
from .schemas import ChatCompletionRequest, LoadModelRequest, RecommendRequest
from .settings import API_KEYS_ENV, ServeArguments

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the server cannot answer, with the status, a message naming the field and the field."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


class BodySizeLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read (by its Content-Length) or as soon
    as the bytes received pass the limit (a chunked upload)."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> JSONResponse:
        return _error(413, f"the request body is larger than this server's limit of {self.max_bytes:,} bytes "
                           f"(--max_body_bytes)", "body")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except self._TooLarge:
            if not started:
                await self._too_large()(scope, receive, send)


class JsonBodies:
    """ASGI middleware: a body sent without a content type, or as a form (``curl -d`` without ``-H``), is read as
    the JSON it almost always is, instead of failing as "not a dictionary"."""

    FORM = b"application/x-www-form-urlencoded"

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            kind = dict(scope.get("headers") or []).get(b"content-type", b"")
            if not kind or kind.split(b";")[0].strip() == self.FORM:
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def _validation_message(err: RequestValidationError) -> tuple[int, str, str | None]:
    errors = err.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        return 400, f"the body is not valid JSON: {detail.get('ctx', {}).get('error', detail.get('msg'))}", "body"
    parts, first = [], None
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        first = first or field
        message = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            message = "unknown field (not part of this endpoint's request)"
        elif e.get("type") == "missing":
            message = "required field missing"
        parts.append(f"{field}: {message}")
    return 422, "; ".join(parts), first


def create_app(pipe: RecommendationPipeline, settings: ServeArguments) -> FastAPI:
    """The service for ``pipe`` (the default version, served as ``--served_model_name`` or the model folder's name)
    with the limits, keys and metrics of ``settings``; batchers start with the app's lifespan."""
    metrics = ServerMetrics()
    registry = ModelRegistry(settings, metrics)
    first = settings.served_model_name or served_name(settings.model)
    keys = settings.keys()
    if settings.exposed and not keys:
        logger.warning("!!! serving on %s with no API key: anyone who reaches this port can use the model. Pass "
                       "--api_key (or set %s) !!!", settings.host, API_KEYS_ENV)

    waiting = [pipe]  # handed to the registry at start-up, so no closure keeps a replaced version alive

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served = await registry.add(first, waiting.pop())
        logger.info("serving %s: %d items, batches of up to %d users", first, len(served.pipe.codebook),
                    settings.max_batch_size)
        yield
        await registry.close()  # uvicorn has answered the in-flight requests by now

    app = FastAPI(title="sid4llm", version="0.1.0", lifespan=lifespan,
                  description="Recommendations and chat from a variable-length semantic-ID recommender.")
    app.state.registry, app.state.metrics = registry, metrics
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if keys:
        app.add_middleware(ApiKeyAuth, keys=keys)
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error(err.status, err.message, err.param, err.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        status, message, param = _validation_message(err)
        return _error(status, message, param)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception):
        logger.exception("request failed: %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(err).__name__}: {err}", None, "server_error")

    # ------------------------------------------------------------------ helpers
    def model_for(requested: str | None) -> ServedModel:
        try:
            return registry.get(requested)
        except UnknownModel:
            raise ApiError(404, f"model: {requested!r} is not served here; this server serves "
                                f"{', '.join(map(repr, registry.models))}", "model", "model_not_found") from None

    def resolve(served: ServedModel, items: Sequence, field: str) -> list[int]:
        if len(items) > settings.max_history_items:
            raise ApiError(422, f"{field}: {len(items):,} items; this server takes at most "
                                f"{settings.max_history_items:,} per list (--max_history_items)", field)
        try:
            return served.pipe.resolve(list(items))
        except KeyError as err:
            raise ApiError(422, f"{field}: {err.args[0]}", field) from None

    def check_k(served: ServedModel, k: int) -> None:
        if k > len(served.pipe.codebook):
            raise ApiError(422, f"k: {k} is more than the catalogue's {len(served.pipe.codebook):,} items", "k")

    async def answered(served: ServedModel, awaitable, request: Request, job: RecommendJob | None = None):
        """The awaitable's result within the request timeout; if the client hangs up first, the work is cancelled
        (a queued recommendation is dropped from its batch) and nobody is answered."""
        task = asyncio.ensure_future(awaitable)

        async def watch():
            while not task.done():
                if await request.is_disconnected():
                    if job is not None:
                        job.dropped_because = "client_left"
                    task.cancel()
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            return await asyncio.wait_for(task, settings.request_timeout_s)
        except TimeoutError:
            raise ApiError(504, f"no answer within {settings.request_timeout_s:g} s (--request_timeout_s); "
                                f"{served.batcher.queued} requests were waiting", None, "timeout") from None
        except ServerBusy as err:
            raise ApiError(503, str(err), None, "server_busy") from None
        except asyncio.CancelledError:
            if job is not None and job.dropped_because == "client_left":
                raise ApiError(499, "the client closed the request before it was answered", None,
                               "client_closed_request") from None
            raise
        finally:
            watcher.cancel()

    # ------------------------------------------------------------------ open endpoints
    @app.get("/health")
    async def health():
        served = registry.get()
        return {"status": "ok", "model": served.name, "models": list(registry.models), "items": len(served.pipe.codebook),
                "chat_style": served.pipe.chat_style, "writes_prose": served.pipe.writes_prose,
                "max_batch_size": settings.max_batch_size, "max_history_items": settings.max_history_items,
                "queued": served.batcher.queued, "batches": served.batcher.batches, "users_served": served.batcher.users}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=metrics.content_type)

    # ------------------------------------------------------------------ /v1
    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m.name, "object": "model", "created": m.created, "owned_by": "sid4llm",
                                            "default": m.name == registry.default} for m in registry.models.values()]}

    @app.post("/v1/recommend")
    async def recommend(body: RecommendRequest, request: Request):
        served = model_for(body.model)
        with registry.using(served):
            check_k(served, body.k)
            single = body.history is not None
            raw = [body.history] if single else body.histories
            fields = ["history"] if single else [f"histories.{n}" for n in range(len(raw))]
            if len(raw) > settings.max_history_items:
                raise ApiError(422, f"histories: {len(raw):,} users in one request; at most "
                                    f"{settings.max_history_items:,}", "histories")
            histories = [resolve(served, h, f) for h, f in zip(raw, fields)]
            banned = set(resolve(served, body.exclude, "exclude"))
            if body.query is not None and served.pipe.chat_style != "request":
                raise ApiError(422, "query: this model did not learn requests in words (the 'requests' task); send a "
                                    "history only", "query")
            job = RecommendJob(histories, body.k, [banned] * len(histories), body.exclude_history,
                               [body.query] * len(histories) if body.query is not None else None)
            lists = await answered(served, served.batcher.recommend(job), request, job)
        return {"model": served.name, "items": lists[0]} if single else {"model": served.name, "results": lists}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served = model_for(body.model)
        with registry.using(served):
            pipe_ = served.pipe
            check_k(served, body.k)
            resolve(served, body.exclude, "exclude")
            if len(body.history) > settings.max_history_items:
                resolve(served, body.history, "history")  # the length error; unknown names are said in the answer
            messages = []
            for m in body.messages:
                message = {"role": m.role, "content": m.text() or ""}
                if m.items:
                    message["items"] = [item.model_dump() for item in m.items]
                messages.append(message)
            max_new = min(x for x in (body.max_completion_tokens, body.max_tokens, settings.max_new_tokens) if x)
            assistant, run = pipe_.assistant, served.batcher.run_model
            plan = await answered(served, run(assistant.plan, messages, k=body.k, history=body.history,
                                              exclude=body.exclude), request)
            answer = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served.name}
            if body.stream:  # the list leaves now; the words follow when written
                words = run(assistant.words, plan, max_new)
                return StreamingResponse(_stream(answer, plan, words, assistant, served, metrics),
                                         media_type="text/event-stream")
            reply = assistant.compose(plan, await answered(served, run(assistant.words, plan, max_new), request))
        tokenizer = pipe_.recommender.tokenizer
        prompt_tokens = sum(len(tokenizer(m["content"]).input_ids) for m in messages)
        completion_tokens = len(tokenizer(reply["content"]).input_ids)
        metrics.tokens.labels(model=served.name).inc(completion_tokens)
        message = {"role": "assistant", "content": reply["content"], "items": reply["items"],
                   "history": reply["history"], "unknown": reply["unknown"]}
        return {**answer, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
                "items": reply["items"]}

    # ------------------------------------------------------------------ admin: model versions
    @app.post("/v1/admin/models")
    async def load_model(body: LoadModelRequest):
        if not keys:
            raise ApiError(403, "loading models needs an API key: start the server with --api_key", None,
                           "permission_error")
        try:
            served = await registry.load(body.source, body.name, body.default)
        except Exception as err:
            raise ApiError(422, f"source: {body.source!r} could not be loaded ({type(err).__name__}: {err})",
                           "source") from None
        return {"name": served.name, "default": registry.default == served.name, "items": len(served.pipe.codebook)}

    @app.delete("/v1/admin/models/{name}")
    async def remove_model(name: str):
        if not keys:
            raise ApiError(403, "removing models needs an API key: start the server with --api_key", None,
                           "permission_error")
        try:
            await registry.remove(name)
        except UnknownModel:
            raise ApiError(404, f"model: {name!r} is not served here", "model", "model_not_found") from None
        except ValueError as err:
            raise ApiError(409, str(err), "model") from None
        return {"removed": name, "default": registry.default}

    return app


class RequestMetrics:
    """ASGI middleware: every HTTP request counted and timed by endpoint (its route, not its raw path) and status."""

    ROUTES = ("/v1/recommend", "/v1/chat/completions", "/v1/models", "/v1/admin/models", "/health", "/metrics")

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = next((r for r in self.ROUTES if path == r or path.startswith(r + "/")), "other")
        status, start = 500, time.perf_counter()

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)


async def _stream(answer: dict, plan: dict, words, assistant, served: ServedModel, metrics: ServerMetrics):
    """The answer as OpenAI's server-sent chunks: the role and the recommended items as soon as the list is known,
    then the content once the words are written, then the finish and [DONE]."""
    head = {**answer, "object": "chat.completion.chunk"}

    def chunk(delta: dict, finish: str | None = None) -> str:
        return f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"

    yield chunk({"role": "assistant", "content": "", "items": plan["items"]})
    reply = assistant.compose(plan, await words)
    metrics.tokens.labels(model=served.name).inc(len(assistant.recommender.tokenizer(reply["content"]).input_ids))
    yield chunk({"content": reply["content"], "history": reply["history"], "unknown": reply["unknown"]})
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"
