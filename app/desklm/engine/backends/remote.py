"""RemoteBackend: chat with a model served by an OpenAI-compatible server.

vLLM, llama-server (llama.cpp), llama-cpp-python's ``llama_cpp.server``, Ollama, LM Studio and
SGLang all speak the OpenAI HTTP API. This backend uses the official ``openai`` client:

- ``GET /v1/models`` lists the models (and, where the server says, their context length:
  vLLM's ``max_model_len``; llama-server's ``/props``);
- ``POST /v1/chat/completions`` with ``stream=True`` and ``stream_options.include_usage``
  streams a reply; the system prompt and the whole conversation (what the budget kept) are sent
  as messages, and the server applies the model's chat template;
- Stop closes the stream. The stream is read on a helper thread that hands chunks over a queue,
  so :meth:`RemoteBackend.stop` (any thread) ends :meth:`generate` within a fraction of a
  second even while the server is silent (a long prefill, a hung server), and shuts the socket
  so the server sees the disconnect and stops generating.

Token counts for budgeting come from the server's own tokenizer where it offers one (vLLM
``POST /tokenize`` with the messages, exact; llama-server ``/apply-template`` + ``/tokenize``,
exact; llama-cpp-python ``/extras/tokenize``, the text exact, the chat markup estimated), else an
estimate from the text's length; :attr:`RemoteBackend.token_source` says which, and every turn's
stats carry it.

Every failure is a :class:`DeskLMError` with a one-line reason. A failure after part of the reply
arrived does not raise: the partial reply is returned with ``finish_reason="error"`` and the
reason in ``note``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from desklm.engine.backends.base import LoadInfo, TurnStats
from desklm.engine.prompt.chat_format import ChatTemplate, Msg, Part
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError

if TYPE_CHECKING:
    import openai


def _openai() -> Any:
    """The openai package, imported on first use: the facade (and so every ``desklm``
    command) does not pay for it until a server is used."""
    import openai

    return openai


log = logging.getLogger("desklm.engine")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0  # the longest silence accepted between chunks (a long prefill)
PROBE_TIMEOUT_S = 5.0
NO_KEY = "no-key"  # sent when there is none: never let the client pick up OPENAI_API_KEY

# token_source values
TOK_EXACT = "server tokenizer"
TOK_TEXT = "server tokenizer, chat markup estimated"
TOK_ESTIMATE = "estimate"


# --- URLs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerURL:
    """A checked server address: ``base`` ends in ``/v1``; ``root`` is the server's root."""

    base: str
    root: str
    host: str
    notice: str | None = None  # e.g. plain http on a private network


def _private(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    shared = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, Tailscale
    return bool(
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or (isinstance(ip, ipaddress.IPv4Address) and ip in shared)
    )


def check_url(url: str, *, resolve: bool = True) -> ServerURL:
    """Normalise ``url`` to the API base and apply the transport rule: https anywhere; plain
    http only to loopback and private addresses (with a notice). Raises with a one-line reason.

    A host name given with http is resolved (that is the one lookup this makes) and every
    address it resolves to must be private.
    """
    raw = url.strip()
    if not raw:
        raise DeskLMError("no server URL given")
    if "://" not in raw:
        raw = "http://" + raw
    try:
        u = urllib.parse.urlsplit(raw)
        port = u.port
    except ValueError as e:
        raise DeskLMError(f"not a valid server URL: {url!r} ({e})") from None
    scheme = u.scheme.lower()
    host = u.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise DeskLMError(f"not a valid server URL: {url!r} (use http://HOST:PORT or https://...)")
    if u.username or u.password:
        raise DeskLMError(
            "put the API key in the key field (or an environment variable), not in the URL"
        )
    path = u.path.rstrip("/")
    for tail in ("/chat/completions", "/completions", "/models"):
        if path.endswith("/v1" + tail):
            path = path[: -len(tail)]
    root_path = path[:-3] if path.endswith("/v1") else path
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    root = f"{scheme}://{netloc}{root_path}"
    base = root + "/v1"
    notice = None
    if scheme == "http":
        if host.lower() == "localhost":
            addrs = ["127.0.0.1"]
        else:
            try:
                addrs = [str(ipaddress.ip_address(host))]
            except ValueError:
                if not resolve:
                    addrs = []
                else:
                    try:
                        infos = socket.getaddrinfo(host, port or 80, proto=socket.IPPROTO_TCP)
                    except OSError as e:
                        raise DeskLMError(f"cannot resolve {host}: {e}") from None
                    addrs = sorted({str(i[4][0]) for i in infos})
        public = [a for a in addrs if not _private(a)]
        if public or not addrs:
            raise DeskLMError(
                f"refusing plain http to {host}: it is not a loopback or private address, so "
                "the conversation and key would cross the internet unencrypted; use https://"
            )
        if not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addrs):
            notice = (
                f"plain http to {host} (a private address): the conversation is not "
                "encrypted on your network"
            )
    return ServerURL(base=base, root=root, host=host, notice=notice)


# --- errors ----------------------------------------------------------------------------------
def _server_message(body: object, fallback: str = "") -> str:
    """The server's own short message from an error body (OpenAI, FastAPI or plain shapes)."""
    msg: object = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
        elif isinstance(err, str):
            msg = err
        if msg is None:
            msg = body.get("detail") or body.get("message")
    elif isinstance(body, str):
        msg = body
    text = " ".join(str(msg if msg else fallback).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def explain(
    e: BaseException,
    where: str,
    *,
    model: str = "",
    key_given: bool = True,
    read_timeout: float = READ_TIMEOUT_S,
) -> DeskLMError:
    """Turn a client exception into a one-line DeskLMError."""
    if isinstance(e, DeskLMError):
        return e
    if isinstance(e, _openai().APITimeoutError | httpx.TimeoutException):
        return DeskLMError(
            f"the server at {where} did not answer within {read_timeout:g} s "
            "(it may be overloaded or stuck)"
        )
    if isinstance(e, _openai().APIConnectionError | httpx.TransportError):
        cause = e.__cause__ or e.__context__ or e
        detail = " ".join(str(cause).split()) or type(cause).__name__
        if "refused" in detail.lower():
            return DeskLMError(
                f"cannot reach the server at {where}: connection refused "
                "(is it running, on that port?)"
            )
        return DeskLMError(f"cannot reach the server at {where}: {detail[:160]}")
    if isinstance(e, _openai().APIStatusError):
        code = e.status_code
        msg = _server_message(e.body, e.message)
        if code == 401:
            return DeskLMError(
                f"the server at {where} refused the API key (401 Unauthorized)"
                if key_given
                else f"the server at {where} needs an API key (401 Unauthorized)"
            )
        if code == 403:
            return DeskLMError(f"the server at {where} denied access (403 Forbidden): {msg}")
        if code == 404:
            what = f"model {model!r}" if model else "the endpoint"
            return DeskLMError(f"{what} not found on the server at {where} (404): {msg}")
        if code == 429:
            return DeskLMError(
                f"the server at {where} is busy or over its rate limit (429 Too "
                f"Many Requests); try again later: {msg}"
            )
        if code >= 500:
            return DeskLMError(f"the server at {where} failed (HTTP {code}): {msg}")
        return DeskLMError(f"the server at {where} rejected the request (HTTP {code}): {msg}")
    if isinstance(e, _openai().APIError):
        return DeskLMError(
            f"the server at {where} reported an error: {_server_message(e.body)}"
            if e.body
            else f"the server at {where} reported an error: {e}"
        )
    return DeskLMError(f"talking to the server at {where} failed: {type(e).__name__}: {e}")


# --- results ---------------------------------------------------------------------------------
@dataclass
class RemoteTurnStats(TurnStats):
    """TurnStats of a reply from a server. ``note`` explains an ``error``/``cancelled`` finish;
    ``token_source`` says where the token figures come from ("usage" when the server reported
    them, else "counted from the stream" or "estimate")."""

    note: str = ""
    token_source: str = ""
    server: str = ""
    model: str = ""


class PromptTokens(list[int]):
    """Token ids (or, for an estimate, placeholders) that also carry the messages they count.

    ``Conversation.plan`` passes the list it got from ``tokenize`` straight into the plan, so the
    messages reach :meth:`RemoteBackend.generate` unchanged.
    """

    messages: list[Msg]
    source: str = TOK_ESTIMATE


def estimate_tokens(text: str) -> int:
    """A rough token count: about 4 bytes of UTF-8 per token for English (BPE vocabularies)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def _render_for_count(messages: Sequence[Msg]) -> str:
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


@dataclass
class ModelEntry:
    id: str
    n_ctx: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- the backend -----------------------------------------------------------------------------
class RemoteBackend:
    """A model on an OpenAI-compatible server, driven like a local engine (see ``Backend``).

    Thread safety: one thread drives it (connect, tokenize, generate); :meth:`stop` may be called
    from any thread.
    """

    def __init__(
        self, *, connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.url: ServerURL | None = None
        self.model = ""
        self.models: list[ModelEntry] = []
        self.server_n_ctx: int | None = None  # what the server says, when it does
        self.ctx_note = ""
        self.token_source = TOK_ESTIMATE
        self._tok_mode = "estimate"  # vllm | llama-server | llama-cpp-python | estimate
        self.extras_ok = True  # top_k / min_p / repeat_penalty accepted by the server
        self.template: ChatTemplate | None = None
        self.load_info: LoadInfo | None = None
        self.settings: Settings | None = None
        self.live_tokens = 0
        self.kv_snapshots = False  # the server keeps its own cache
        self._context_used = 0
        self._key: str | None = None
        self._client: openai.OpenAI | None = None
        self._http: httpx.Client | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: tuple[threading.Event, list[Any]] | None = None

    def __repr__(self) -> str:  # never show the key
        where = self.url.root if self.url else "not connected"
        return f"<RemoteBackend {self.model or '?'} at {where}>"

    # -- connection --
    @property
    def where(self) -> str:
        return self.url.root if self.url else "?"

    @property
    def model_label(self) -> str:
        return f"{self.model} @ {self.url.host}" if self.url else self.model

    def _timeout(self, read: float | None = None) -> httpx.Timeout:
        return httpx.Timeout(read or self.read_timeout, connect=self.connect_timeout)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def connect(
        self,
        url: str,
        api_key: str | None = None,
        model: str | None = None,
        settings: Settings | None = None,
    ) -> list[str]:
        """Connect: list the served models, pick ``model`` (or the only/first one), learn the
        context size and the tokenizer. Returns the model ids. Raises DeskLMError."""
        target = check_url(url)
        self.close()
        self.url, self._key = target, (api_key or None)
        if target.notice:
            log.info("%s", target.notice)
        self._client = _openai().OpenAI(
            base_url=target.base,
            api_key=self._key or NO_KEY,
            max_retries=0,
            timeout=_openai().Timeout(self.read_timeout, connect=self.connect_timeout),
        )
        self._http = httpx.Client(
            timeout=self._timeout(PROBE_TIMEOUT_S), headers=self._headers(), follow_redirects=False
        )
        self.models = self.list_models()
        ids = [m.id for m in self.models]
        if not ids:
            raise DeskLMError(f"the server at {self.where} serves no models")
        if model:
            if model not in ids:
                raise DeskLMError(
                    f"model {model!r} is not served at {self.where}; it serves: "
                    + ", ".join(ids[:8])
                    + (" …" if len(ids) > 8 else "")
                )
            self.model = model
        else:
            self.model = ids[0]
        entry = next(m for m in self.models if m.id == self.model)
        self.server_n_ctx = entry.n_ctx or self._props_n_ctx()
        self._probe_tokenizer()
        self.template = ChatTemplate("server", parts_fn=lambda msgs: [Part(_to_json(msgs), True)])
        self.load(Path(self.model), settings or Settings())
        log.info(
            "connected to %s, model %s (n_ctx %s, tokens: %s)",
            self.where,
            self.model,
            self.n_ctx,
            self.token_source,
        )
        return ids

    def list_models(self) -> list[ModelEntry]:
        if self._client is None:
            raise DeskLMError("not connected to a server")
        try:
            page = self._client.models.list()
            out = []
            for m in page.data:
                extra = dict(m.model_extra or {})
                n = None
                for k in (
                    "max_model_len",
                    "context_length",
                    "max_context_length",
                    "context_window",
                ):
                    v = extra.get(k)
                    if isinstance(v, int) and v > 0:
                        n = v
                        break
                out.append(ModelEntry(m.id, n, extra))
            return out
        except Exception as e:
            if isinstance(e, _openai().NotFoundError):
                raise DeskLMError(
                    f"{self.where} does not look like an OpenAI-compatible server "
                    "(no /v1/models); give the address of its API"
                ) from None
            raise explain(
                e, self.where, key_given=bool(self._key), read_timeout=self.read_timeout
            ) from None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to a non-OpenAI endpoint of the server; None where it is absent or fails."""
        assert self._http is not None and self.url is not None
        try:
            r = self._http.post(self.url.root + path, json=body)
        except httpx.HTTPError as e:
            log.debug("%s %s: %s", path, self.where, type(e).__name__)
            return None
        if r.status_code != 200:
            return None
        try:
            return r.json()
        except ValueError:
            return None

    def _props_n_ctx(self) -> int | None:
        """llama-server says its serving context in /props."""
        assert self._http is not None and self.url is not None
        try:
            r = self._http.get(self.url.root + "/props")
            data = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if isinstance(data, dict):
            gen = data.get("default_generation_settings")
            n = gen.get("n_ctx") if isinstance(gen, dict) else None
            if isinstance(n, int) and n > 0:
                return n
        return None

    def _probe_tokenizer(self) -> None:
        probe: list[Msg] = [{"role": "user", "content": "hello"}]
        got = self._post(
            "/tokenize", {"model": self.model, "messages": probe, "add_generation_prompt": True}
        )
        if isinstance(got, dict) and isinstance(got.get("count"), int):
            self._tok_mode, self.token_source = "vllm", TOK_EXACT
            if not self.server_n_ctx and isinstance(got.get("max_model_len"), int):
                self.server_n_ctx = got["max_model_len"]
            return
        got = self._post("/apply-template", {"messages": probe})
        if isinstance(got, dict) and isinstance(got.get("prompt"), str):
            self._tok_mode, self.token_source = "llama-server", TOK_EXACT
            return
        got = self._post("/extras/tokenize", {"input": "hello", "model": self.model})
        if isinstance(got, dict) and isinstance(got.get("tokens"), list):
            self._tok_mode, self.token_source = "llama-cpp-python", TOK_TEXT
            return
        self._tok_mode, self.token_source = "estimate", TOK_ESTIMATE

    def close(self) -> None:
        self.stop()
        for c in (self._client, self._http):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()
        self._client = self._http = None
        self.template = None
        self.load_info = None

    # -- the Backend interface --
    @property
    def loaded(self) -> bool:
        return self._client is not None and self.template is not None

    @property
    def n_ctx(self) -> int:
        if self.server_n_ctx:
            return self.server_n_ctx
        return int(self.settings["n_ctx"]) if self.settings is not None else 4096

    @property
    def context_used(self) -> int:
        return self._context_used

    def unload(self) -> None:
        """The session's quit: let go of the connection."""
        self.close()

    def set_chat_format(self, chat_format: str) -> str:
        """A server writes the prompt with its own chat template; the setting is kept for
        local models."""
        return "server"

    def load(
        self,
        path: str | Path,
        settings: Settings,
        progress: Callable[[float], None] | None = None,
        clamp: bool = False,
    ) -> LoadInfo:
        """The session's "load": adopt ``settings`` (``n_ctx`` is the context size where the
        server does not say it). The model was chosen by :meth:`connect`; ``path`` is ignored."""
        if self._client is None or self.url is None:
            raise DeskLMError("not connected to a server")
        self.settings = settings.copy()
        notes = []
        if self.url.notice:
            notes.append(self.url.notice)
        if self.server_n_ctx:
            self.ctx_note = f"context {self.server_n_ctx} tokens, as the server reports"
        else:
            self.ctx_note = (
                f"the server does not report its context size: using the "
                f"n_ctx setting ({self.n_ctx} tokens)"
            )
            notes.append(self.ctx_note)
        if self.token_source == TOK_ESTIMATE:
            notes.append(
                "the server offers no tokenizer: token counts for the context budget are estimates"
            )
        self.settings.limits["n_ctx"] = max(self.n_ctx, 512)
        self.load_info = LoadInfo(
            path=Path(self.model),
            name=self.model_label,
            architecture="remote",
            n_ctx=self.n_ctx,
            n_ctx_train=self.server_n_ctx or 0,
            n_layers=0,
            load_s=0.0,
            chat_format="server",
            gpu_offload_supported=False,
            file_size=0,
            notes=notes,
        )
        if progress is not None:
            progress(1.0)
        return self.load_info

    def tokenize(self, text: str | Sequence[Part], special: bool = False) -> list[int]:
        """Count the tokens of ``text`` as rendered by :attr:`template` (JSON messages; plain
        text counts as one user message)."""
        if not isinstance(text, str):
            text = "".join(p.text for p in text)
        messages = _from_json(text)
        toks = PromptTokens(self._count(messages))
        toks.messages = messages
        toks.source = self.token_source
        return toks

    def _count(self, messages: list[Msg]) -> list[int]:
        if self._tok_mode == "vllm":
            got = self._post(
                "/tokenize",
                {"model": self.model, "messages": messages, "add_generation_prompt": True},
            )
            if isinstance(got, dict) and isinstance(got.get("tokens"), list):
                return [int(t) for t in got["tokens"]]
        elif self._tok_mode == "llama-server":
            got = self._post("/apply-template", {"messages": messages})
            if isinstance(got, dict) and isinstance(got.get("prompt"), str):
                toks = self._post("/tokenize", {"content": got["prompt"], "add_special": True})
                if isinstance(toks, dict) and isinstance(toks.get("tokens"), list):
                    return [int(t) for t in toks["tokens"]]
        elif self._tok_mode == "llama-cpp-python":
            got = self._post(
                "/extras/tokenize", {"input": _render_for_count(messages), "model": self.model}
            )
            if isinstance(got, dict) and isinstance(got.get("tokens"), list):
                return [int(t) for t in got["tokens"]]
        if self._tok_mode != "estimate":
            log.info("the server's tokenizer stopped answering; estimating token counts")
            self._tok_mode, self.token_source = "estimate", TOK_ESTIMATE
        n = sum(estimate_tokens(m["content"]) + 4 for m in messages) + 2
        return [0] * n

    def reusable_prefix(self, tokens: list[int]) -> int:
        return 0  # the server keeps its own cache; reported after the turn where it says

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        if self.settings is not None:
            self.settings.update({"n_threads": n_threads, "n_threads_batch": n_threads_batch})

    def reset(self) -> None:
        self._context_used = 0  # the server keeps no conversation between requests

    def stop(self) -> None:
        """End the running reply (or connection attempt) now. Safe from any thread."""
        self._stop.set()
        with self._lock:
            active = self._active
        if active is not None:
            cancel, holder = active
            cancel.set()
            if holder:
                _shutdown(holder[0])

    def begin_turn(self) -> None:
        self._stop.clear()

    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def generate(
        self,
        tokens: list[int],
        sampling: Settings,
        on_text: Callable[[str], None] | None = None,
        reasoning_open: bool = False,
        clear_stop: bool = True,
    ) -> tuple[str, TurnStats]:
        """Stream a reply to the messages ``tokens`` were counted for (see ``tokenize``).
        (``reasoning_open`` and ``clear_stop`` are the local engine's; a server splits
        reasoning itself.)"""
        messages = getattr(tokens, "messages", None)
        if messages is None:
            raise DeskLMError(
                "a server model takes messages: budget the prompt with this "
                "backend's template and tokenize first"
            )
        return self.chat(messages, sampling, on_text, prompt_tokens=len(tokens))

    # -- the request --
    def request_body(
        self,
        messages: list[Msg],
        sampling: Settings,
        max_tokens: int,
        stop: list[str] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments for ``client.chat.completions.create``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": float(sampling["temperature"]),
            "top_p": float(sampling["top_p"]),
            "max_tokens": max_tokens,
        }
        seed = int(sampling["seed"])
        if seed >= 0:
            body["seed"] = seed
        if stop:
            body["stop"] = stop
        if self.extras_ok:
            # llama.cpp's names; vLLM calls the penalty repetition_penalty (others ignore both)
            rp = float(sampling["repeat_penalty"])
            body["extra_body"] = {
                "top_k": int(sampling["top_k"]),
                "min_p": float(sampling["min_p"]),
                "repeat_penalty": rp,
                "repetition_penalty": rp,
            }
        return body

    def chat(
        self,
        messages: list[Msg],
        sampling: Settings,
        on_text: Callable[[str], None] | None = None,
        *,
        prompt_tokens: int = 0,
        stop: list[str] | None = None,
    ) -> tuple[str, RemoteTurnStats]:
        """Stream one reply. Returns (reply, stats); raises DeskLMError when nothing arrived."""
        if self._client is None or self.url is None:
            raise DeskLMError("not connected to a server")
        self._stop.clear()
        self.live_tokens = 0
        n_ctx = self.n_ctx
        room = n_ctx - prompt_tokens if prompt_tokens else n_ctx
        max_tokens = max(1, min(int(sampling["max_tokens"]), room))
        body = self.request_body(messages, sampling, max_tokens, stop)
        try:
            return self._run(body, on_text, prompt_tokens, n_ctx)
        except _ExtrasRejected:
            log.info("%s rejects top_k/min_p/repeat_penalty; sending without them", self.where)
            self.extras_ok = False
            return self._run(
                self.request_body(messages, sampling, max_tokens, stop),
                on_text,
                prompt_tokens,
                n_ctx,
            )

    def _run(
        self,
        body: dict[str, Any],
        on_text: Callable[[str], None] | None,
        prompt_tokens: int,
        n_ctx: int,
    ) -> tuple[str, RemoteTurnStats]:
        assert self._client is not None and self.url is not None
        client = self._client
        stats = RemoteTurnStats(
            prompt_tokens=prompt_tokens, n_ctx=n_ctx, server=self.url.root, model=self.model
        )
        q: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        cancel = threading.Event()
        holder: list[Any] = []

        def pump() -> None:
            stream = None
            try:
                stream = client.chat.completions.create(**body)
                holder.append(stream)
                if cancel.is_set():
                    return
                for chunk in stream:
                    q.put(("chunk", chunk, time.perf_counter()))
                    if cancel.is_set():
                        return
            except BaseException as e:  # handed to the caller's thread
                q.put(("error", e, time.perf_counter()))
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
                q.put(("done", None, time.perf_counter()))

        with self._lock:
            self._active = (cancel, holder)
        if self._stop.is_set():  # stop() arrived before the request
            cancel.set()
        t0 = time.perf_counter()
        worker = threading.Thread(target=pump, name="desklm-remote-stream", daemon=True)
        worker.start()
        reply: list[str] = []
        chunks = 0
        t_first = t_last = None
        usage: Any = None
        finish: str | None = None
        timings: dict[str, Any] = {}
        error: BaseException | None = None
        try:
            while True:
                try:
                    kind, item, t = q.get(timeout=0.1)
                except queue.Empty:
                    if self._stop.is_set():
                        finish = "cancelled"
                        break
                    continue
                if kind == "chunk":
                    if getattr(item, "usage", None) is not None:
                        usage = item.usage
                    extra = item.model_extra or {}
                    if isinstance(extra.get("timings"), dict):
                        timings = extra["timings"]
                    for ch in item.choices or []:
                        piece = ch.delta.content if ch.delta is not None else None
                        if piece:
                            if t_first is None:
                                t_first = t
                                stats.ttft_s = t - t0
                            t_last = t
                            chunks += 1
                            self.live_tokens = chunks
                            reply.append(piece)
                            if on_text is not None:
                                on_text(piece)
                        if ch.finish_reason:
                            finish = ch.finish_reason
                    if self._stop.is_set():
                        finish = "cancelled"
                        break
                elif kind == "error":
                    error = item
                elif kind == "done":  # the helper thread has finished
                    break
        finally:
            cancel.set()
            if worker.is_alive() and holder:
                _shutdown(holder[0])
            with self._lock:
                self._active = None
        text = "".join(reply)
        stats.total_s = time.perf_counter() - t0
        if self._stop.is_set():  # our own shutdown may have surfaced as a read error first
            finish, error = "cancelled", None
        if error is not None:
            if (
                isinstance(error, _openai().BadRequestError)
                and "extra_body" in body
                and not text
                and _rejects_extras(error)
            ):
                raise _ExtrasRejected()
            reason = explain(
                error,
                self.where,
                model=self.model,
                key_given=bool(self._key),
                read_timeout=self.read_timeout,
            )
            if not text:
                raise reason
            finish = "error"
            cut = isinstance(error, _openai().APIConnectionError) and not isinstance(
                error, _openai().APITimeoutError
            )
            stats.note = (
                "the connection to the server was cut mid-reply; the partial reply is kept"
                if cut
                else f"{reason}; the partial reply is kept"
            )
        elif finish == "cancelled":
            stats.note = "stopped; the partial reply is kept" if text else "stopped"
        if finish is None:
            finish = "error" if text else "stop"
            if text:
                stats.note = "the server ended the stream without a finish reason"
        # the server's word (content_filter, tool_calls) is kept; a few spellings normalised
        stats.finish_reason = {"eos": "stop", "stop_sequence": "stop"}.get(  # type: ignore[assignment]
            finish, finish
        )
        # token figures: the server's usage where it sent one, else counted from the stream
        if usage is not None and getattr(usage, "completion_tokens", None) is not None:
            stats.completion_tokens = int(usage.completion_tokens)
            stats.prompt_tokens = int(usage.prompt_tokens or prompt_tokens)
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None) if details is not None else None
            if isinstance(cached, int):
                stats.prompt_tokens_reused = cached
            stats.token_source = "usage"
        else:
            stats.completion_tokens = chunks
            stats.token_source = "counted from the stream; prompt: " + (
                self.token_source if prompt_tokens else "unknown"
            )
        if isinstance(timings.get("cache_n"), int) and not stats.prompt_tokens_reused:
            stats.prompt_tokens_reused = timings["cache_n"]
        pps = timings.get("prompt_per_second")
        if isinstance(pps, int | float) and pps > 0:
            stats.prompt_tokens_per_s = float(pps)  # the server's own measurement
        if t_first is not None and t_last is not None and t_last > t_first:
            n = stats.completion_tokens if stats.completion_tokens >= chunks else chunks
            # tokens after the first one, over the time they took to arrive
            stats.gen_tokens_per_s = max(n - 1, 1) / (t_last - t_first) if n > 1 else None
        self.live_tokens = stats.completion_tokens
        stats.context_used = stats.prompt_tokens + stats.completion_tokens
        self._context_used = stats.context_used
        return text, stats


class _ExtrasRejected(Exception):
    pass


def _rejects_extras(e: openai.BadRequestError) -> bool:
    msg = _server_message(e.body, e.message).lower()
    return any(
        k in msg
        for k in (
            "top_k",
            "min_p",
            "repeat_penalty",
            "repetition_penalty",
            "unrecognized",
            "extra",
            "unknown",
        )
    )


def _shutdown(stream: Any) -> None:
    """Shut the stream's socket so a blocked read returns and the server sees the disconnect."""
    with contextlib.suppress(Exception):
        ns = stream.response.extensions.get("network_stream")
        sock = ns.get_extra_info("socket") if ns is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


def _to_json(messages: Sequence[Msg]) -> str:
    return json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False
    )


def _from_json(text: str) -> list[Msg]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, list):  # plain text: one user message
        return [{"role": "user", "content": text}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in data]


def probe_server(url: str, api_key: str | None = None) -> tuple[list[str], str | None]:
    """List the models at ``url`` (the connect dialog's Test). Returns (ids, notice)."""
    b = RemoteBackend(read_timeout=15.0)
    try:
        ids = b.connect(url, api_key)
        return ids, b.url.notice if b.url else None
    finally:
        b.close()
