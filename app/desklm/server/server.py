"""ApiServer: the opt-in OpenAI-compatible HTTP server, on its own thread.

Nothing listens until :meth:`ApiServer.start`. It binds loopback by default; any other
address needs an API key. It never touches the user's conversation: every request is a job of
kind ``"api"`` on the shared :class:`~desklm.engine.runner.Runner`, run on the loaded engine.

Listeners (``add_listener``) receive ``("state", ServerState)`` when the server starts, stops or
its queue changes, and ``("request", RequestRecord)`` when a request ends. They are called from
the server's thread (or the caller of start/stop): the window turns them into Qt signals.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from desklm.engine import Runner, Runtime
from desklm.errors import DeskLMError
from desklm.server.app import ApiContext, RequestRecord, build_app

log = logging.getLogger("desklm.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
MIN_KEY_LENGTH = 8
Listener = Callable[[str, Any], None]


@dataclass(frozen=True)
class ServerState:
    """off, or listening on ``url`` with ``queued`` API requests waiting and ``running``
    being answered; with parallel slots, ``slots`` of them (``running`` busy) decoding
    ``tokens_per_s`` together."""

    listening: bool = False
    url: str = ""
    queued: int = 0
    running: int = 0
    slots: int = 0  # 0: requests are answered one at a time
    tokens_per_s: float = 0.0

    @property
    def text(self) -> str:
        if not self.listening:
            return "off"
        extra = f", {self.queued} queued" if self.queued else ""
        if self.slots:
            busy = (
                (
                    f", answering {self.running} of {self.slots} at once, "
                    f"{self.tokens_per_s:.0f} tok/s together"
                )
                if self.running
                else ""
            )
        else:
            busy = ", answering a request" if self.running else ""
        return f"listening on {self.url}{busy}{extra}"


def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{h}:{port}/v1"


class ApiServer:
    """The OpenAI-compatible server over ``runner`` and the engine ``engine()`` returns.

    ``settings()`` gives the default sampling settings (a request's own parameters override
    them); ``max_waiting`` bounds the API requests waiting for the model (429 past it).
    """

    def __init__(
        self,
        runner: Runner,
        engine: Callable[[], Any],
        settings: Callable[[], Any] | None = None,
        *,
        max_waiting: int = 8,
        log_size: int = 500,
        slots: Callable[[bool], str] | None = None,
    ) -> None:
        from desklm.engine import Settings

        self.runner = runner
        self.engine = engine
        self.settings = settings or Settings
        # asks for the model's API slots on start (a reload when it was loaded without them;
        # returns a line saying so) and stops asking on stop; None: the model has its own
        self._slots = slots
        self.note = ""  # what starting did to the model ("" when nothing), for the window
        self.max_waiting = max_waiting
        self.log: deque[RequestRecord] = deque(maxlen=log_size)
        self._listeners: list[Listener] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ctx: ApiContext | None = None
        self._url = ""
        self.host = ""
        self.port = 0

    @classmethod
    def for_runtime(
        cls, runtime: Runtime, *, max_waiting: int = 8, log_size: int = 500
    ) -> ApiServer:
        """A server lending ``runtime``'s local model (only while the session uses it) with
        the settings in effect, on its runner."""

        def slots(on: bool) -> str:
            if not on:  # nothing to load: the next load reads it
                return runtime.reserve_api_slots(False)
            return runtime.runner.call(lambda: runtime.reserve_api_slots(True), "slots")

        return cls(
            runtime.runner,
            runtime.served_engine,
            runtime.settings_snapshot,
            max_waiting=max_waiting,
            log_size=log_size,
            slots=slots,
        )

    # -- listeners --
    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def _emit(self, event: str, data: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, data)
            except Exception:  # a listener must never break a request
                log.exception("server listener failed")

    # -- state --
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        return self._url if self.running else ""

    @property
    def state(self) -> ServerState:
        if not self.running or self._ctx is None:
            return ServerState()
        queued = sum(1 for j in self.runner.pending() if j.kind == "api")
        cur = self.runner.current
        running = int(cur is not None and cur.kind == "api")
        b = self.batch_stats()
        if b is None:
            return ServerState(True, self._url, queued, running)
        return ServerState(
            True, self._url, queued + b.waiting, running + b.busy, b.slots, b.tokens_per_s
        )

    def batch_stats(self) -> Any:
        """The slots' readings (a ``BatchStats``: slots, busy, waiting, aggregate and
        per-request tokens/s), or None when requests are answered one at a time. Any thread:
        for the window's gauges and ``/metrics``."""
        eng = self.engine()
        batch = getattr(eng, "batch", None) if eng is not None else None
        return batch.stats() if batch is not None else None

    def _record(self, rec: RequestRecord) -> None:
        self.log.append(rec)
        self._emit("request", rec)

    # -- lifecycle --
    def start(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        cors_origins: tuple[str, ...] | list[str] = (),
        *,
        timeout: float = 10.0,
    ) -> str:
        """Bind and serve; returns the base URL (``http://HOST:PORT/v1``). Raises
        DeskLMError with a one-line reason (no key for a network address, port in use...)."""
        import uvicorn

        if self.running:
            raise DeskLMError(f"the API server is already listening on {self._url}")
        host = (host or DEFAULT_HOST).strip()
        key = api_key or None
        if not is_loopback(host) and not key:
            raise DeskLMError(
                f"listening on {host} makes the model reachable from the "
                "network: set an API key first"
            )
        if key is not None and (len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key)):
            raise DeskLMError(
                f"the API key must be at least {MIN_KEY_LENGTH} characters, without spaces"
            )
        origins = tuple(o.strip().rstrip("/") for o in cors_origins if o.strip())
        sock = self._bind(host, port)
        bound_port = sock.getsockname()[1]
        self.note = ""
        if self._slots is not None:
            try:  # after the bind: a port in use reloads nothing
                self.note = self._slots(True)
            except BaseException:
                sock.close()
                self._slots(False)
                raise
        self._ctx = ApiContext(
            runner=self.runner,
            engine=self.engine,
            settings=self.settings,
            api_key=key,
            max_waiting=self.max_waiting,
            loopback=is_loopback(host),
            cors_origins=origins,
            on_record=self._record,
            on_queue=lambda: self._emit("state", self.state),
            batch_stats=self.batch_stats,
        )
        config = uvicorn.Config(
            build_app(self._ctx),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            loop="asyncio",
            server_header=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._url = url_for(host, bound_port)
        self.host, self.port = host, bound_port
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as e:  # uvicorn exits with SystemExit on startup failures
                failed.append(e)
                log.error("the API server stopped: %r", e)
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="api-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            self.stop()
            raise DeskLMError(
                f"the API server could not start on {host}:{port}"
                + (f": {failed[0]}" if failed else "")
            )
        log.info("API server listening on %s%s", self._url, " (key required)" if key else "")
        self._emit("state", self.state)
        return self._url

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        if not 0 <= port <= 65535:
            raise DeskLMError(f"port {port} is out of range (0 to 65535)")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise DeskLMError(f"cannot listen on {host}: {e.strerror or e}") from None
        family, _type, _proto, _name, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.set_inheritable(False)
        except OSError as e:
            sock.close()
            reason = "the port is in use" if e.errno in (98, 48, 10048) else (e.strerror or e)
            raise DeskLMError(f"cannot listen on {host}:{port}: {reason}") from None
        return sock

    def stop(self, timeout: float = 3.0) -> None:
        """Stop listening: cancel the API's jobs (queued and running), close connections."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.runner.cancel(kinds=("api",))
        eng = self.engine()
        if eng is not None and getattr(eng, "batch", None) is not None:
            eng.batch.cancel_all()  # the slots are all the API's
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(1.0)
        self._server = self._thread = None
        self._ctx = None
        self._url = ""
        if self._slots is not None:
            self._slots(False)
        log.info("API server stopped")
        self._emit("state", ServerState())
