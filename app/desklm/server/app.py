"""The ASGI app: OpenAI's endpoints over the one inference runner.

Every request that wants tokens becomes one job on the :class:`~desklm.engine.runner.Runner`
(kind ``"api"``), queued in order behind whatever the window or ``desklm chat`` submitted. The
job's text reaches the event loop through a :class:`_Mailbox` (one wake-up per burst of
pieces); a client that goes away cancels its job (a queued job never runs; a running one
stops at the next token).

With parallel slots (the ``parallel`` setting above 1) a completion is instead a
:class:`~desklm.engine.Sequence` of the engine's batch: several clients stream at once, decoded
together by the runner's batch job (see ``engine.backends.local.batch``); a client that goes
away frees its slot at the next step. ``/metrics`` gives the slots' numbers in Prometheus text.

Runs on the server's own event-loop thread; touches the engine only inside jobs.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from desklm.engine import Job, JobCancelled, Runner, RunnerBusy, RunnerClosed
from desklm.errors import DeskLMError
from desklm.server import protocol as P
from desklm.server.protocol import ApiError
from desklm.server.tool_calls import ToolTurn

if TYPE_CHECKING:  # the batch loads llama.cpp: imported where a request needs it
    from desklm.engine import Sequence

log = logging.getLogger("desklm.server")

_END = object()  # the job is done (its future holds the result)
T = TypeVar("T")


@dataclass
class RequestRecord:
    """One line of the request log."""

    time: float  # when it arrived (epoch seconds)
    client: str  # "host:port"
    endpoint: str  # "POST /v1/chat/completions"
    status: int  # HTTP status; 499 = the client went away
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_s: float | None = None
    duration_s: float = 0.0
    stream: bool = False
    error: str = ""
    ttft_s: float | None = None  # from the job's start to the first token
    n_ctx: int = 0  # the context the request ran in (what the window's gauge compares with)

    def line(self) -> str:
        rate = f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s else "- tok/s"
        when = time.strftime("%H:%M:%S", time.localtime(self.time))
        tail = f" ({self.error})" if self.error else ""
        return (
            f"{when} {self.client} {self.endpoint} {self.status} "
            f"{self.prompt_tokens}+{self.completion_tokens} tokens {rate} "
            f"{self.duration_s:.2f} s{tail}"
        )


class _ClientGone(Exception):
    pass


@dataclass
class ApiContext:
    """What the handlers need: the runner, the engine (a callable, so a model switch is
    seen), default sampling settings, limits, and callbacks into :class:`ApiServer`."""

    runner: Runner
    engine: Callable[[], Any]  # -> ChatEngine | None
    settings: Callable[[], Any]  # -> Settings (defaults for sampling)
    api_key: str | None
    max_waiting: int
    loopback: bool
    cors_origins: tuple[str, ...]
    on_record: Callable[[RequestRecord], None]
    on_queue: Callable[[], None]
    max_body: int = P.MAX_BODY_BYTES
    batch_stats: Callable[[], Any] = lambda: None  # -> BatchStats | None (for /metrics)

    def __post_init__(self) -> None:
        self.submit_lock = threading.Lock()
        self.active = 0  # API requests admitted and not finished (queued + running)


# --- middleware -------------------------------------------------------------------------------
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def _host_name(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_loopback_name(name: str) -> bool:
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class _Guard:
    """Key, Host and Origin checks before anything else runs.

    - With a key: ``Authorization: Bearer KEY`` (constant-time compare), else 401.
    - Bound to loopback: the Host header must name loopback (a web page that rebinds its own
      DNS name to 127.0.0.1 gets 403).
    - A browser's cross-origin request (an ``Origin`` header not allowed) gets 403, so a web
      page cannot make the model work even where the browser would not show it the answer.
    """

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx
        self.key = ctx.api_key.encode() if ctx.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        err = self._check(headers)
        if err is not None:
            client = scope.get("client")
            self.ctx.on_record(
                RequestRecord(
                    time=time.time(),
                    client=f"{client[0]}:{client[1]}" if client else "?",
                    endpoint=f"{scope.get('method', '?')} {scope.get('path', '')}",
                    status=err.status,
                    error=err.message,
                )
            )
            await _error_response(err)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, headers: dict[str, str]) -> ApiError | None:
        if self.ctx.loopback and not _is_loopback_name(_host_name(headers.get("host", ""))):
            return ApiError(
                403,
                "this server answers only requests addressed to localhost",
                "invalid_request_error",
                "invalid_host",
            )
        origin = headers.get("origin")
        if (
            origin is not None
            and origin not in self.ctx.cors_origins
            and "*" not in self.ctx.cors_origins
        ):
            return ApiError(
                403,
                f"requests from web pages at {origin} are not allowed (allow "
                "the origin in DeskLM's server settings)",
                "invalid_request_error",
                "origin_not_allowed",
            )
        if self.key is not None:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if not auth:
                return ApiError(
                    401,
                    "You didn't provide an API key. You need to provide your "
                    "API key in an Authorization header using Bearer auth (i.e. "
                    "Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    "invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), self.key
            ):
                return ApiError(
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    "invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return None


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


# --- helpers ----------------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ApiError(
        413,
        f"the request body is larger than {limit // 1024} KiB",
        "invalid_request_error",
        "request_too_large",
    )
    cl = request.headers.get("content-length", "")
    if cl.isdigit() and int(cl) > limit:
        raise too_big
    chunks, n = [], 0
    try:
        async for c in request.stream():
            n += len(c)
            if n > limit:
                raise too_big
            chunks.append(c)
    except ClientDisconnect:
        raise ApiError(499, "the client went away", "invalid_request_error") from None
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _until(request: Request, aw: Awaitable[T], job: Job[Any] | Sequence) -> T:
    """Await ``aw``; if the client disconnects first, cancel ``job`` and raise _ClientGone."""
    task = asyncio.ensure_future(aw)
    watch = asyncio.ensure_future(_watch_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watch.cancel()
        job.cancel()
        raise
    if task in done:
        watch.cancel()
        return task.result()
    task.cancel()
    job.cancel()
    raise _ClientGone()


class _Mailbox:
    """Pieces from the inference thread to the event loop, one wake-up per burst: a batch
    step gives every running request a piece, and a wake-up for each
    (``call_soon_threadsafe``) had the loop's thread take the GIL from the inference thread
    once per piece, between the step's samples, instead of once while the next step
    decodes."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[tuple[asyncio.Queue[Any], Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        box = cls._by_loop.get(loop)
        if box is None:
            box = cls._by_loop[loop] = cls(loop)
        return box

    def post(self, q: asyncio.Queue[Any], item: Any) -> None:
        """Any thread: ``item`` goes into ``q`` on the loop, in order."""
        with self._lock:
            self._items.append((q, item))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody reads the queues any more
            with self._lock:
                self._items.clear()
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, deque()
            self._scheduled = False
        for q, item in items:
            q.put_nowait(item)


def _client(request: Request) -> str:
    c = request.client
    return f"{c.host}:{c.port}" if c else "?"


def _grammar(rf: P.ResponseFormat | None) -> Any:
    """A llama.cpp grammar for ``response_format`` (None for text)."""
    if rf is None or rf.type == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if rf.type == "json_object":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None
    try:
        return LlamaGrammar.from_json_schema(json.dumps(rf.json_schema.schema_), verbose=False)
    except Exception as e:  # the converter raises bare exceptions for schemas it cannot do
        raise P.unsupported(
            "response_format.json_schema.schema",
            f"this schema cannot be turned into a grammar ({e})",
        ) from None


def _checked_prompt(
    eng: Any, kind: str, prepare: Callable[[Any], list[int]], rec: RequestRecord
) -> list[int]:
    """The request's prompt tokens (inference thread), or 400 when the context cannot hold
    them; the request log learns their count."""
    tokens = prepare(eng)
    n_ctx = eng.n_ctx
    if len(tokens) >= n_ctx:
        raise ApiError(
            400,
            f"This model's maximum context length is {n_ctx} tokens. "
            f"However, your {'messages' if kind == 'chat' else 'prompt'} "
            f"resulted in {len(tokens)} tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages" if kind == "chat" else "prompt",
        )
    rec.prompt_tokens, rec.n_ctx = len(tokens), n_ctx
    return tokens


def _sequence(
    eng: Any,
    kind: str,
    prepare: Callable[[Any], list[int]],
    sampling: Any,
    stops: Callable[[Any], list[str] | None],
    grammar: Any,
    rec: RequestRecord,
    put: Callable[[Any], None],
    stream: bool,
    tool_kw: Callable[[], dict[str, Any]],
) -> Sequence:
    """A completion as a sequence of the engine's batch: the same prompt, stops, grammar and
    text rules as ``ChatEngine.generate`` (a raw completion keeps its whitespace).
    ``tool_kw()``: a tool turn's ``generate`` keywords once its prompt is made (the forcing
    grammar and its stops, the call markers the reply keeps)."""

    def tokens() -> list[int]:
        out = _checked_prompt(eng, kind, prepare, rec)
        kw = tool_kw()  # read before the sequence's sampler and text are made
        if "grammar" in kw:
            seq.grammar = kw["grammar"]
        if "stop" in kw:
            seq.stops = list(kw["stop"])
        seq.keep_ids = eng.keep_token_ids(kw.get("keep", ()))
        return out

    seq: Sequence = eng.batch_sequence(
        prepare=tokens,
        sampling=sampling,
        stop=stops(eng),
        grammar=grammar,
        strip=kind == "chat",
        on_start=lambda: put(None),
        on_text=(lambda piece: put(piece)) if stream else None,
        label=f"api {rec.client}",
    )
    return seq


class _EventStream(StreamingResponse):
    """Server-sent events; ``on_close`` runs however the response ends (a client that goes
    away mid-token leaves the body generator suspended, so its own ``finally`` cannot be
    relied on to cancel the job promptly)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


# --- the handlers -----------------------------------------------------------------------------
class Handlers:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _model(self) -> tuple[Any, str]:
        """The loaded engine and its model id, or 503 (loading / nothing loaded)."""
        r = self.ctx.runner
        jobs = ([r.current] if r.current is not None else []) + r.pending()
        if any(j.kind == "load" for j in jobs):
            raise ApiError(
                503,
                "a model is loading; try again shortly",
                "server_error",
                "model_loading",
                headers={"Retry-After": "5"},
            )
        eng = self.ctx.engine()
        if eng is None or not eng.loaded or eng.load_info is None:
            raise ApiError(
                503,
                "no model is loaded in DeskLM",
                "server_error",
                "model_not_loaded",
                headers={"Retry-After": "5"},
            )
        return eng, eng.load_info.path.stem

    def _sampling(self, req: P._Sampling) -> Any:
        s = self.ctx.settings().copy()
        try:
            s.update(req.sampling_values())
        except DeskLMError as e:
            name = str(e).split(" ", 1)[0].rstrip(":")
            raise P.bad_request(str(e), name) from None
        return s

    async def models(self, request: Request) -> Response:
        eng, mid = self._model()
        return JSONResponse({"object": "list", "data": [self._model_obj(eng, mid)]})

    async def model(self, request: Request) -> Response:
        eng, mid = self._model()
        if request.path_params["model"] != mid:
            raise ApiError(
                404,
                f"The model '{request.path_params['model']}' does not exist; DeskLM serves '{mid}'",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return JSONResponse(self._model_obj(eng, mid))

    @staticmethod
    def _model_obj(eng: Any, mid: str) -> dict[str, Any]:
        try:
            created = int(eng.load_info.path.stat().st_mtime)
        except OSError:
            created = 0
        return {
            "id": mid,
            "object": "model",
            "created": created,
            "owned_by": "desklm",
            "context_length": eng.load_info.n_ctx,
        }

    def _rejected(self, request: Request, t0: float, e: ApiError) -> None:
        self.ctx.on_record(
            RequestRecord(
                time=t0,
                client=_client(request),
                endpoint=f"{request.method} {request.url.path}",
                status=e.status,
                duration_s=time.time() - t0,
                error=e.message,
            )
        )

    async def chat(self, request: Request) -> Response:
        t0 = time.time()
        try:
            return await self._chat(request, t0)
        except ApiError as e:
            if not getattr(e, "logged", False):
                self._rejected(request, t0, e)
            raise

    async def completions(self, request: Request) -> Response:
        t0 = time.time()
        try:
            return await self._completions(request, t0)
        except ApiError as e:
            if not getattr(e, "logged", False):
                self._rejected(request, t0, e)
            raise

    async def _chat(self, request: Request, t0: float) -> Response:
        body = await _read_body(request, self.ctx.max_body)
        req = P.parse_request(P.ChatRequest, P.parse_json(body))
        if req.uses_tools:
            return await self._tool_chat(request, req, t0)
        messages = req.plain_messages()
        grammar = _grammar(req.response_format)
        sampling = self._sampling(req)
        extra_stop = req.stop_list()

        def stops(eng: Any) -> list[str] | None:
            return [*eng.template.stop, *extra_stop] if extra_stop else None

        return await self._run(
            request,
            req,
            t0,
            "chat",
            lambda eng: eng.prompt_tokens(messages),
            sampling,
            stops,
            grammar,
        )

    async def _tool_chat(self, request: Request, req: P.ChatRequest, t0: float) -> Response:
        """A chat that offers tools or carries calls: the prompt, grammar and reply are the
        :class:`ToolTurn`'s; the rest is the common path."""
        turn = ToolTurn(req)
        grammar = None if turn.forced else _grammar(req.response_format)
        sampling = self._sampling(req)
        extra_stop = req.stop_list()

        def stops(eng: Any) -> list[str] | None:
            return [*eng.template.stop, *extra_stop] if extra_stop else None

        return await self._run(
            request, req, t0, "chat", turn.prepare, sampling, stops, grammar, turn=turn
        )

    async def _completions(self, request: Request, t0: float) -> Response:
        body = await _read_body(request, self.ctx.max_body)
        req = P.parse_request(P.CompletionRequest, P.parse_json(body))
        prompt = req.prompt_text
        sampling = self._sampling(req)
        stop = req.stop_list()
        return await self._run(
            request,
            req,
            t0,
            "text",
            lambda eng: eng.plain_tokens(prompt),
            sampling,
            lambda _eng: stop,
            None,
            echo=getattr(req, "echo", False),
            prompt=prompt,
        )

    # -- the common path --
    async def _run(
        self,
        request: Request,
        req: P._Sampling,
        t0: float,
        kind: str,
        prepare: Callable[[Any], list[int]],
        sampling: Any,
        stops: Callable[[Any], list[str] | None],
        grammar: Any,
        *,
        echo: bool = False,
        prompt: str = "",
        turn: ToolTurn | None = None,
    ) -> Response:
        ctx = self.ctx
        _eng, mid = self._model()
        rec = RequestRecord(
            time=t0,
            client=_client(request),
            endpoint=f"{request.method} {request.url.path}",
            status=200,
            stream=req.stream,
        )
        mailbox = _Mailbox.of(asyncio.get_running_loop())
        q: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            mailbox.post(q, item)

        def work(job: Job[Any]) -> tuple[str, Any]:
            if job.cancelled:
                raise JobCancelled("cancelled before it started")
            eng = ctx.engine()
            if eng is None or not eng.loaded:
                raise ApiError(
                    503, "no model is loaded in DeskLM", "server_error", "model_not_loaded"
                )
            tokens = _checked_prompt(eng, kind, prepare, rec)
            put(None)  # started: the prompt is valid, the stream may begin

            def on_text(piece: str) -> None:
                if job.cancelled:  # a cancel that raced the engine's start clears no flag
                    eng.stop()
                elif req.stream:
                    put(piece)

            # a raw completion continues its prompt exactly: its whitespace is kept
            kw: dict[str, Any] = {"stop": stops(eng), "grammar": grammar, **tool_kw()}
            return eng.generate(tokens, sampling, on_text, strip=kind == "chat", **kw)

        from desklm.engine import batch_loop

        def tool_kw() -> dict[str, Any]:  # after the prompt: the turn knows its syntax then
            return turn.generate_kw(extra_stop=req.stop_list()) if turn is not None else {}

        # a sequence of the batch when the model has slots; else a job, one at a time
        loop_ = batch_loop(ctx.runner, _eng)
        job: Any
        with ctx.submit_lock:
            waiting = sum(1 for j in ctx.runner.pending() if j.kind == "api")
            if loop_ is not None:
                waiting += loop_.batch.waiting
            if waiting >= ctx.max_waiting:
                raise ApiError(
                    429,
                    f"{waiting} requests are already waiting for the model; try again shortly",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    headers={"Retry-After": "2"},
                )
            try:
                job = (
                    ctx.runner.submit(work, "api")
                    if loop_ is None
                    else loop_.submit(
                        _sequence(
                            _eng,
                            kind,
                            prepare,
                            sampling,
                            stops,
                            grammar,
                            rec,
                            put,
                            req.stream,
                            tool_kw,
                        )
                    )
                )
            except RunnerBusy as e:
                raise ApiError(
                    429,
                    str(e),
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    headers={"Retry-After": "2"},
                ) from None
            except RunnerClosed as e:
                raise ApiError(503, str(e), "server_error", "shutting_down") from None
            except DeskLMError as e:  # the batch's engine was unloaded meanwhile
                raise ApiError(503, str(e), "server_error", "model_not_loaded") from None
            ctx.active += 1
        job.future.add_done_callback(lambda _f: put(_END))
        ctx.on_queue()
        finished = False

        def finish(status: int, error: str = "", stats: Any = None) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            if not job.done():
                job.cancel()
            with ctx.submit_lock:
                ctx.active -= 1
            rec.status, rec.error = status, error
            if stats is not None:
                rec.completion_tokens = stats.completion_tokens
                rec.tokens_per_s = stats.gen_tokens_per_s
                rec.ttft_s = getattr(stats, "ttft_s", None)
            elif hasattr(job, "live_tokens"):  # a sequence gone mid-reply: what it had
                rec.completion_tokens = job.live_tokens
            rec.duration_s = time.time() - t0
            ctx.on_record(rec)
            ctx.on_queue()

        try:
            first = await _until(request, q.get(), job)
            if not req.stream:  # wait for the whole reply
                item = first
                while item is not _END:
                    item = await _until(request, q.get(), job)
                reply, stats = self._outcome(job)
            # a stream whose job ended at once (e.g. cancelled): one stream, then done
        except _ClientGone:
            finish(499, "client went away")
            return Response(status_code=499)
        except ApiError as e:
            finish(e.status, e.message)
            e.logged = True  # type: ignore[attr-defined]
            raise
        except BaseException as e:
            finish(500, str(e))
            raise
        if not req.stream:
            finish(200, stats=stats)
            return self._complete(kind, mid, reply, stats, echo, prompt, turn)

        return _EventStream(
            self._events(
                q, job, kind, mid, req.include_usage, finish, first is _END, echo, prompt, turn
            ),
            on_close=lambda: finish(499, "client went away"),
        )

    @staticmethod
    def _outcome(job: Job[Any] | Sequence) -> tuple[str, Any]:
        """The job's (reply, stats), or its failure as an ApiError."""
        try:
            reply, stats = job.future.result()
        except ApiError:
            raise
        except (JobCancelled, RunnerClosed):
            raise ApiError(
                503,
                "the request was cancelled (the server is stopping or the model was stopped)",
                "server_error",
                "cancelled",
            ) from None
        except DeskLMError as e:
            if "no model is loaded" in str(e):
                raise ApiError(503, str(e), "server_error", "model_not_loaded") from None
            raise ApiError(500, str(e), "server_error", "generation_failed") from None
        except Exception as e:  # a bug: logged (by the runner too), answered in OpenAI's shape
            log.error("API request failed", exc_info=e)
            raise ApiError(
                500,
                f"internal error: {type(e).__name__} (details in DeskLM's log)",
                "server_error",
                "internal_error",
            ) from None
        if stats.finish_reason == "error":
            raise ApiError(
                500,
                "generation failed mid-reply (details in DeskLM's log)",
                "server_error",
                "generation_failed",
            )
        if stats.finish_reason == "cancelled":
            raise ApiError(
                503,
                "the request was cancelled (the server is stopping or the model was stopped)",
                "server_error",
                "cancelled",
            )
        return reply, stats

    @staticmethod
    def _complete(
        kind: str,
        mid: str,
        reply: str,
        stats: Any,
        echo: bool,
        prompt: str,
        turn: ToolTurn | None = None,
    ) -> Response:
        fin = P.finish_reason(stats.finish_reason)
        if turn is not None:
            body = turn.body(
                P.new_id("chatcmpl"), mid, reply, fin, stats.prompt_tokens, stats.completion_tokens
            )
        elif kind == "chat":
            body = P.chat_completion(
                P.new_id("chatcmpl"), mid, reply, fin, stats.prompt_tokens, stats.completion_tokens
            )
        else:
            body = P.text_completion(
                P.new_id("cmpl"),
                mid,
                (prompt if echo else "") + reply,
                fin,
                stats.prompt_tokens,
                stats.completion_tokens,
            )
        return JSONResponse(body)

    async def _events(
        self,
        q: asyncio.Queue[Any],
        job: Job[Any] | Sequence,
        kind: str,
        mid: str,
        include_usage: bool,
        finish: Callable[..., None],
        ended: bool,
        echo: bool,
        prompt: str,
        turn: ToolTurn | None = None,
    ) -> AsyncIterator[bytes]:
        cid = P.new_id("chatcmpl" if kind == "chat" else "cmpl")
        created = int(time.time())

        def delta(d: dict[str, Any]) -> bytes:
            return P.sse(P.chat_chunk(cid, mid, created, d, with_usage=include_usage))

        def piece(text: str) -> bytes:
            if turn is not None:
                return b"".join(delta(d) for d in turn.deltas(text))
            if kind == "chat":
                return P.sse(
                    P.chat_chunk(cid, mid, created, {"content": text}, with_usage=include_usage)
                )
            return P.sse(P.text_chunk(cid, mid, created, text))

        status, error, stats = 499, "client went away", None
        try:
            if kind == "chat":
                yield P.sse(
                    P.chat_chunk(
                        cid,
                        mid,
                        created,
                        {"role": "assistant", "content": ""},
                        with_usage=include_usage,
                    )
                )
            elif echo and prompt:
                yield piece(prompt)
            while not ended:
                item = await q.get()
                parts = []
                while True:  # what piled up while the client read: one chunk
                    if item is _END:
                        ended = True
                        break
                    if item is not None:
                        parts.append(item)
                    if q.empty():
                        break
                    item = q.get_nowait()
                if parts:
                    yield piece("".join(parts))
            try:
                _reply, stats = self._outcome(job)
            except ApiError as e:
                status, error = e.status, e.message
                yield P.sse(e.body())
                return
            fin = P.finish_reason(stats.finish_reason)
            if turn is not None:
                for d in turn.end_deltas():
                    yield delta(d)
                fin = turn.finish_reason(fin, turn.streamed_calls)
            if kind == "chat":
                yield P.sse(P.chat_chunk(cid, mid, created, {}, fin, with_usage=include_usage))
            else:
                yield P.sse(P.text_chunk(cid, mid, created, "", fin))
            if include_usage:
                yield P.sse(
                    P.usage_chunk(
                        cid,
                        mid,
                        created,
                        "chat.completion.chunk" if kind == "chat" else "text_completion",
                        stats.prompt_tokens,
                        stats.completion_tokens,
                    )
                )
            yield P.sse("[DONE]")
            status, error = 200, ""
        finally:
            finish(status, error, stats)


# --- the app ----------------------------------------------------------------------------------
async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = ApiError(
            404,
            f"Unknown request URL: {request.method} {request.url.path}. "
            "DeskLM serves /v1/models, /v1/chat/completions and /v1/completions.",
            "invalid_request_error",
            "unknown_url",
        )
    elif exc.status_code == 405:
        err = ApiError(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            "invalid_request_error",
            "method_not_allowed",
            headers=dict(exc.headers or {}),
        )
    else:
        err = ApiError(exc.status_code, str(exc.detail), "invalid_request_error")
    return _error_response(err)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s", request.url.path, exc_info=exc)
    return _error_response(
        ApiError(500, f"internal error: {type(exc).__name__}", "server_error", "internal_error")
    )


class _SlotCollector:
    """The local server's numbers in Prometheus text (``GET /metrics``), read at each scrape:
    slots busy, requests waiting, aggregate and per-request generation rates, totals."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ctx = self.ctx
        b = ctx.batch_stats()
        queued = sum(1 for j in ctx.runner.pending() if j.kind == "api")
        cur = ctx.runner.current
        one = int(cur is not None and cur.kind == "api")
        slots, busy = (b.slots, b.busy) if b is not None else (1, one)
        yield GaugeMetricFamily("desklm_slots", "Requests the model answers at once", slots)
        yield GaugeMetricFamily("desklm_slots_busy", "Slots answering a request now", busy)
        yield GaugeMetricFamily(
            "desklm_requests_waiting",
            "Requests waiting for a slot",
            queued + (b.waiting if b is not None else 0),
        )
        yield GaugeMetricFamily(
            "desklm_requests_active", "API requests admitted and not done", ctx.active
        )
        if b is not None:
            yield GaugeMetricFamily(
                "desklm_tokens_per_second",
                "Tokens generated per second, all slots together (last 3 s)",
                b.tokens_per_s,
            )
            per = GaugeMetricFamily(
                "desklm_request_tokens_per_second",
                "Each running request's generation rate",
                labels=["slot"],
            )
            for i, rate in enumerate(b.per_request_tokens_per_s):
                per.add_metric([str(i)], rate)
            yield per
            yield CounterMetricFamily(
                "desklm_tokens_generated", "Tokens generated by the slots", b.tokens_total
            )
            yield CounterMetricFamily(
                "desklm_prompt_tokens",
                "Prompt tokens evaluated by the slots",
                b.prompt_tokens_total,
            )
            yield CounterMetricFamily(
                "desklm_batch_requests", "Requests the slots finished", b.requests_total
            )
            yield CounterMetricFamily("desklm_batch_steps", "Batch decoding steps", b.steps_total)


def _metrics_endpoint(ctx: ApiContext) -> Callable[[Request], Awaitable[Response]]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SlotCollector(ctx))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def build_app(ctx: ApiContext) -> Starlette:
    h = Handlers(ctx)
    routes = [
        Route("/metrics", _metrics_endpoint(ctx), methods=["GET"]),
        Route("/v1/models", h.models, methods=["GET"]),
        Route("/v1/models/{model:path}", h.model, methods=["GET"]),
        Route("/v1/chat/completions", h.chat, methods=["POST"]),
        Route("/v1/completions", h.completions, methods=["POST"]),
    ]
    middleware = []
    if ctx.cors_origins:  # outermost: browsers get CORS headers on errors too
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(ctx.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    middleware.append(Middleware(_Guard, ctx=ctx))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
