"""The HTTP service around one :class:`RecommendationPipeline` (FastAPI on uvicorn).

    POST /v1/recommend          {"history": [...], "k": 10, "exclude": [...]}  (or "histories" for a batch)
    POST /v1/chat/completions   the OpenAI chat-completions request; the answer also lists its items as data
    GET  /health                model loaded, catalogue size, batching counters
    GET  /v1/models             the one model served, OpenAI-style

Every error is ``{"error": {"message", "type", "param"}}`` with a 4xx status that names the field at fault
(5xx only for a timeout, a full queue or a bug); a failing request never affects another one.
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
from fastapi.responses import JSONResponse, StreamingResponse

from ..pipeline import RecommendationPipeline
from .batching import RecommendBatcher, RecommendJob, ServerBusy
from .schemas import ChatCompletionRequest, RecommendRequest
from .settings import ServeArguments

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
    """The service for ``pipe`` with the limits of ``settings`` (the batcher starts with the app's lifespan)."""
    name = settings.served_model_name or settings.model
    batcher = RecommendBatcher(pipe, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        logger.info("serving %s: %d items, batches of up to %d users", name, len(pipe.codebook), settings.max_batch_size)
        yield
        await batcher.stop()  # uvicorn has answered the in-flight requests by now

    app = FastAPI(title="sid4llm", version="0.1.0", lifespan=lifespan,
                  description="Recommendations and chat from a variable-length semantic-ID recommender.")
    app.state.batcher = batcher
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

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
    def resolve(items: Sequence, field: str) -> list[int]:
        if len(items) > settings.max_history_items:
            raise ApiError(422, f"{field}: {len(items):,} items; this server takes at most "
                                f"{settings.max_history_items:,} per list (--max_history_items)", field)
        try:
            return pipe.resolve(list(items))
        except KeyError as err:
            raise ApiError(422, f"{field}: {err.args[0]}", field) from None

    def check_k(k: int) -> None:
        if k > len(pipe.codebook):
            raise ApiError(422, f"k: {k} is more than the catalogue's {len(pipe.codebook):,} items", "k")

    async def answered(awaitable):
        try:
            return await asyncio.wait_for(awaitable, settings.request_timeout_s)
        except TimeoutError:
            raise ApiError(504, f"no answer within {settings.request_timeout_s:g} s (--request_timeout_s); "
                                f"{batcher.queued} requests were waiting", None, "timeout") from None
        except ServerBusy as err:
            raise ApiError(503, str(err), None, "server_busy") from None

    def check_model(requested: str | None) -> None:
        if requested is not None and requested != name:
            raise ApiError(404, f"model: {requested!r} is not served here; this server serves {name!r}", "model",
                           "model_not_found")

    # ------------------------------------------------------------------ endpoints
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "items": len(pipe.codebook), "chat_style": pipe.chat_style,
                "writes_prose": pipe.writes_prose, "max_batch_size": settings.max_batch_size,
                "max_history_items": settings.max_history_items, "queued": batcher.queued,
                "batches": batcher.batches, "users_served": batcher.users}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "sid4llm"}]}

    @app.post("/v1/recommend")
    async def recommend(body: RecommendRequest):
        check_k(body.k)
        single = body.history is not None
        raw = [body.history] if single else body.histories
        fields = ["history"] if single else [f"histories.{n}" for n in range(len(raw))]
        if len(raw) > settings.max_history_items:
            raise ApiError(422, f"histories: {len(raw):,} users in one request; at most {settings.max_history_items:,}",
                           "histories")
        histories = [resolve(h, f) for h, f in zip(raw, fields)]
        banned = set(resolve(body.exclude, "exclude"))
        if body.query is not None and pipe.chat_style != "request":
            raise ApiError(422, "query: this model did not learn requests in words (the 'requests' task); send a "
                                "history only", "query")
        job = RecommendJob(histories, body.k, [banned] * len(histories), body.exclude_history,
                           [body.query] * len(histories) if body.query is not None else None)
        lists = await answered(batcher.recommend(job))
        return {"model": name, "items": lists[0]} if single else {"model": name, "results": lists}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        check_model(body.model)
        check_k(body.k)
        resolve(body.exclude, "exclude")
        if len(body.history) > settings.max_history_items:
            resolve(body.history, "history")  # the length error; unknown names are said in the answer
        messages = []
        for m in body.messages:
            message = {"role": m.role, "content": m.text() or ""}
            if m.items:
                message["items"] = [item.model_dump() for item in m.items]
            messages.append(message)
        max_new = min(x for x in (body.max_completion_tokens, body.max_tokens, settings.max_new_tokens) if x)
        reply = await answered(batcher.run_model(pipe.chat, messages, k=body.k, history=body.history,
                                                 exclude=body.exclude, max_new_tokens=max_new))
        tokenizer = pipe.recommender.tokenizer
        prompt_tokens = sum(len(tokenizer(m["content"]).input_ids) for m in messages)
        completion_tokens = len(tokenizer(reply["content"]).input_ids)
        answer = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        message = {"role": "assistant", "content": reply["content"], "items": reply["items"],
                   "history": reply["history"], "unknown": reply["unknown"]}
        if body.stream:
            return StreamingResponse(_stream(answer, message), media_type="text/event-stream")
        return {**answer, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
                "items": reply["items"]}

    return app


def _stream(answer: dict, message: dict):
    """The answer as OpenAI's server-sent chunks: the role and the whole content, then the finish, then [DONE]
    (the answer is decoded in one piece, so it arrives as one content chunk)."""
    head = {**answer, "object": "chat.completion.chunk"}
    delta = {"role": "assistant", "content": message["content"], "items": message["items"]}
    yield f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': None}]})}\n\n"
    yield f"data: {json.dumps({**head, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
    yield "data: [DONE]\n\n"
