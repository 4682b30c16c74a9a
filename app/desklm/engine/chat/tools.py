"""Tools for the chat: MCP servers (stdio and Streamable HTTP) through the official ``mcp`` SDK.

What lives here, all without Qt:

* **Configuration**: ``mcp.json`` in DeskLM's config dir, in Claude Desktop's format
  (``{"mcpServers": {"name": {"command", "args", "env"} | {"url", "headers"}}}``), plus a
  ``"desklm"`` section of its own (which tools are on, which are always allowed). Written
  atomically under a file lock; read like every stored file: what is valid is kept, the rest
  dropped with a note. :func:`import_mcp_json` copies servers from another file (Claude
  Desktop's, LM Studio's) and never writes to it. Keys for HTTP servers live in the OS keyring
  (service ``desklm``, user ``mcp:<name>``), never in the file.
* **Clients**: :class:`ToolHub` runs every server's client on one asyncio event loop in one
  background thread it owns; the inference thread calls it through sync, timeout-bounded
  methods. A server that fails to start or dies gets a one-line reason and the chat goes on.
* **Consent and limits**: :class:`ToolTurn` asks the user before every call (allow once,
  always for this tool, deny), counts calls against the per-turn limit and returns each call
  as a :class:`ToolStep` (saved with the chat). Results are text data, cut at
  :data:`MAX_RESULT_BYTES` with a notice.
* **The prompt side** (describing tools to the model, parsing a call, the grammar that forces
  one) is :mod:`desklm.engine.chat.tool_format`.

No tool is on until the user turns it on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from desklm.errors import DeskLMError

log = logging.getLogger("desklm.tools")

MCP_FILE = "mcp.json"
CONFIG_SCHEMA = 1  # the "desklm" section of mcp.json
MAX_RESULT_BYTES = 64 * 1024  # a tool result longer than this is cut, with a notice
START_TIMEOUT_S = 30.0  # a server that has not listed its tools by then has failed to start
CALL_TIMEOUT_S = 120.0  # a call that has not answered by then is given up
MAX_SSE_EVENT = 32 * 2**20  # one streamed HTTP message may be this big (the SDK's default: 1 MB)
KEY_SERVICE = "desklm"
SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|cookie", re.I)
_NAME = re.compile(r"^[^\x00-\x1f/\\]{1,64}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


# --- configuration ------------------------------------------------------------------------------
@dataclass
class ServerConfig:
    """One MCP server: a command to run (stdio) or a URL (Streamable HTTP).

    ``tools_on``: the tools the user turned on (none at first); ``always``: those the user
    allowed for good ("always for this tool"); ``key_env``: the name of an environment variable
    holding the HTTP server's key (else the keyring's); ``key_header``: the header the key goes
    in (``Authorization`` sends ``Bearer <key>``)."""

    name: str
    command: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    key_header: str = "Authorization"
    key_env: str = ""
    tools_on: list[str] = field(default_factory=list)
    always: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "http" if self.url else "stdio"

    @property
    def where(self) -> str:
        """The command line or the URL, for people."""
        if self.url:
            return self.url
        return " ".join([self.command, *self.args])

    def entry(self) -> dict[str, Any]:
        """The server as Claude Desktop writes it in ``mcpServers``."""
        if self.url:
            out: dict[str, Any] = {"type": "http", "url": self.url}
            if self.headers:
                out["headers"] = dict(self.headers)
            return out
        out = {"command": self.command, "args": list(self.args)}
        if self.env:
            out["env"] = dict(self.env)
        if self.cwd:
            out["cwd"] = self.cwd
        return out

    def own_entry(self) -> dict[str, Any]:
        """What DeskLM keeps about the server besides Claude's fields."""
        out: dict[str, Any] = {"on": sorted(self.tools_on), "always": sorted(self.always)}
        if self.url:
            out["key_header"] = self.key_header
            if self.key_env:
                out["key_env"] = self.key_env
        return out


def _text(v: Any, limit: int = 4096) -> str | None:
    return v if isinstance(v, str) and "\x00" not in v and len(v) <= limit else None


def check_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not _NAME.match(name):
        raise DeskLMError("a tool server needs a name of 1 to 64 characters, without / or \\")
    return name


def check_http_url(url: str) -> str:
    """A Streamable HTTP endpoint: http(s), a host, no spaces or credentials in it."""
    u = (url or "").strip()
    try:
        parts = urlsplit(u)
        port = parts.port  # raises for a port that is not a number
    except ValueError as e:
        raise DeskLMError(f"{u[:100]!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in u):
        raise DeskLMError(
            f"{u[:100]!r} is not an http:// or https:// URL of an MCP server "
            "(e.g. http://127.0.0.1:8000/mcp)"
        )
    if parts.username or parts.password:
        raise DeskLMError("put the server's key in the key field, not in the URL")
    del port
    return u


def parse_server(name: str, raw: Any) -> tuple[ServerConfig | None, list[str]]:
    """One ``mcpServers`` entry checked: (the server or None, notes on what was dropped).
    Secret-looking headers stay in ``headers`` here; :func:`import_mcp_json` moves them out."""
    try:
        name = check_name(name)
    except DeskLMError as e:
        return None, [f"skipped a server: {e}"]
    if not isinstance(raw, dict):
        return None, [f"skipped server {name!r}: its entry is not an object"]
    notes: list[str] = []
    kind = raw.get("type") or raw.get("transport")
    if kind is not None and (
        not isinstance(kind, str)
        or kind.lower().replace("_", "-")
        not in ("stdio", "http", "streamable-http", "streamablehttp")
    ):
        return None, [
            f"skipped server {name!r}: transport {str(kind)[:30]!r} is not supported "
            "(DeskLM speaks stdio and Streamable HTTP)"
        ]
    if raw.get("url") is not None:
        try:
            url = check_http_url(_text(raw.get("url")) or "")
        except DeskLMError as e:
            return None, [f"skipped server {name!r}: {e}"]
        headers: dict[str, str] = {}
        hs = raw.get("headers")
        for k, v in hs.items() if isinstance(hs, dict) else ():
            if (
                isinstance(k, str)
                and _HEADER_NAME.match(k)
                and _text(v, 8192) is not None
                and "\n" not in v
                and "\r" not in v
            ):
                headers[k] = v
            else:
                notes.append(f"server {name!r}: dropped header {str(k)[:40]!r} (not valid)")
        if hs is not None and not isinstance(hs, dict):
            notes.append(f"server {name!r}: 'headers' is not an object; ignored")
        return ServerConfig(name, url=url, headers=headers), notes
    command = _text(raw.get("command"))
    if not command or not command.strip():
        return None, [f"skipped server {name!r}: it has neither a command nor a url"]
    args_raw = raw.get("args", [])
    args = [a for a in args_raw if _text(a) is not None] if isinstance(args_raw, list) else []
    if not isinstance(args_raw, list) or len(args) != len(args_raw):
        return None, [f"skipped server {name!r}: 'args' must be a list of strings"]
    env: dict[str, str] = {}
    env_raw = raw.get("env") or {}
    for k, v in env_raw.items() if isinstance(env_raw, dict) else ():
        if isinstance(k, str) and _ENV_NAME.match(k) and _text(v, 65536) is not None:
            env[k] = v
        else:
            notes.append(f"server {name!r}: dropped environment variable {str(k)[:40]!r}")
    cwd = _text(raw.get("cwd")) or ""
    return ServerConfig(name, command=command.strip(), args=args, env=env, cwd=cwd), notes


def _names(v: Any) -> list[str]:
    return (
        sorted({x for x in v if isinstance(x, str) and 0 < len(x) <= 128})
        if isinstance(v, list)
        else []
    )


class McpConfig:
    """``mcp.json`` under DeskLM's config dir (or ``path``).

    :meth:`load` returns the valid servers and lists in ``problems`` what was skipped; a file
    whose content is unusable (not JSON, not an object) is moved aside to ``mcp.json.corrupt``.
    :meth:`update` is the one way to change it: read, change, write atomically, under a lock.
    A file written by a newer DeskLM (its ``desklm.schema`` is higher) is never overwritten."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from desklm.paths import app_dirs

            path = app_dirs().config / MCP_FILE
        self.path = Path(path)
        self.problems: list[str] = []
        self._extra: dict[str, Any] = {}  # top-level keys of others (kept as they are)
        self._refuse: str | None = None

    def load(self) -> dict[str, ServerConfig]:
        from desklm.engine.store.files import DamagedFile, json_object_or_aside

        self.problems, self._extra, self._refuse = [], {}, None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            self._refuse = f"it could not be read ({e.strerror or e})"
            self.problems.append(f"could not read {self.path} ({e.strerror or e}); no tools")
            return {}
        try:
            data = json_object_or_aside(self.path, raw)
        except DamagedFile as d:
            if not d.moved:
                self._refuse = "it is damaged and could not be moved aside"
            self.problems.append(f"{self.path.name} was damaged ({d.why}); {d.where}")
            return {}
        own_raw = data.get("desklm")
        own: dict[str, Any] = own_raw if isinstance(own_raw, dict) else {}
        schema = own.get("schema", CONFIG_SCHEMA)
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > CONFIG_SCHEMA:
            self._refuse = f"it was written by a newer DeskLM (schema {schema})"
            self.problems.append(
                f"{self.path.name} was written by a newer DeskLM (schema "
                f"{schema}, this one reads {CONFIG_SCHEMA}); left untouched"
            )
        self._extra = {k: v for k, v in data.items() if k not in ("mcpServers", "desklm")}
        servers_raw = data.get("mcpServers", {})
        if not isinstance(servers_raw, dict):
            self.problems.append("'mcpServers' is not an object: no servers read")
            servers_raw = {}
        own_servers_raw = own.get("servers")
        own_servers: dict[str, Any] = own_servers_raw if isinstance(own_servers_raw, dict) else {}
        out: dict[str, ServerConfig] = {}
        for name, entry in servers_raw.items():
            cfg, notes = parse_server(str(name), entry)
            self.problems += notes
            if cfg is None:
                continue
            mine_raw = own_servers.get(name)
            mine: dict[str, Any] = mine_raw if isinstance(mine_raw, dict) else {}
            cfg.tools_on, cfg.always = _names(mine.get("on")), _names(mine.get("always"))
            header = mine.get("key_header")
            if isinstance(header, str) and _HEADER_NAME.match(header):
                cfg.key_header = header
            key_env = mine.get("key_env")
            if isinstance(key_env, str) and _ENV_NAME.match(key_env):
                cfg.key_env = key_env
            out[cfg.name] = cfg
        return out

    def save(self, servers: dict[str, ServerConfig]) -> None:
        from desklm.engine.store.files import atomic_write_json

        if self._refuse is not None and self.path.exists():
            raise DeskLMError(f"not changing {self.path}: {self._refuse}")
        data = {
            **self._extra,
            "mcpServers": {n: s.entry() for n, s in servers.items()},
            "desklm": {
                "schema": CONFIG_SCHEMA,
                "servers": {n: s.own_entry() for n, s in servers.items()},
            },
        }
        atomic_write_json(self.path, data)

    def update(self, change: Callable[[dict[str, ServerConfig]], None]) -> dict[str, ServerConfig]:
        """Read, ``change(servers)`` in place, write; under a file lock so two DeskLM processes
        never lose each other's changes. A write that fails is a DeskLMError."""
        from filelock import FileLock, Timeout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock", timeout=10):
                servers = self.load()
                change(servers)
                self.save(servers)
        except Timeout:
            raise DeskLMError(f"{self.path} is locked by another DeskLM process") from None
        except OSError as e:
            raise DeskLMError(f"could not write {self.path}: {e.strerror or e}") from None
        return servers


# --- keys (the OS keyring) ------------------------------------------------------------------------
def _key_user(name: str) -> str:
    return f"mcp:{name}"


def save_key(name: str, key: str) -> str:
    """Keep an HTTP server's key in the keyring; returns a note saying where it went."""
    from desklm.engine.store.connections import keyring_status

    ok, what = keyring_status()
    if not ok:
        return (
            f"{what}: the key was not saved; set it in an environment variable and give "
            "its name (desklm tools add --key-env VAR)"
        )
    import keyring
    from keyring.errors import KeyringError

    try:
        keyring.set_password(KEY_SERVICE, _key_user(name), key)
    except KeyringError as e:
        return f"the keyring refused the key ({type(e).__name__}); it was not saved"
    return f"key saved in the OS keyring ({what})"


def delete_key(name: str) -> None:
    from desklm.engine.store.connections import keyring_status

    if keyring_status()[0]:
        import keyring
        from keyring.errors import KeyringError, PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError, KeyringError):
            keyring.delete_password(KEY_SERVICE, _key_user(name))


def key_for(cfg: ServerConfig) -> str | None:
    """The server's key: its environment variable if it names one, else the keyring's."""
    if cfg.key_env and os.environ.get(cfg.key_env):
        return os.environ[cfg.key_env]
    from desklm.engine.store.connections import keyring_status

    if not keyring_status()[0]:
        return None
    import keyring
    from keyring.errors import KeyringError

    try:
        return keyring.get_password(KEY_SERVICE, _key_user(cfg.name)) or None
    except KeyringError as e:
        log.warning("could not read a tool server's key from the keyring: %s", type(e).__name__)
        return None


def request_headers(cfg: ServerConfig) -> dict[str, str]:
    """The headers an HTTP server gets: its plain headers, and its key where it belongs."""
    headers = dict(cfg.headers)
    key = key_for(cfg)
    if key:
        headers[cfg.key_header] = (
            f"Bearer {key}"
            if cfg.key_header.lower() == "authorization" and not key.lower().startswith("bearer ")
            else key
        )
    return headers


# --- adding, removing, importing servers ------------------------------------------------------
def add_server(
    cfg: ServerConfig, key: str | None = None, config: McpConfig | None = None
) -> list[str]:
    """Add (or replace, by name) a server; its tools stay off until the user turns them on
    (a replaced server keeps its choices for tools it still has). Returns notes."""
    cfg.name = check_name(cfg.name)
    entry = cfg.entry()
    checked, notes = parse_server(cfg.name, entry)
    if checked is None:
        raise DeskLMError(notes[0] if notes else f"server {cfg.name!r} is not valid")
    if notes:
        raise DeskLMError(notes[0])
    if cfg.key_env and not _ENV_NAME.match(cfg.key_env):
        raise DeskLMError(f"{cfg.key_env!r} is not an environment variable name")
    for k in cfg.headers:
        if SECRET_HEADER.search(k):
            raise DeskLMError(
                f"header {k!r} looks like a key: give it as the server's key "
                "(it is kept in the OS keyring), not as a header"
            )
    config = config or McpConfig()

    def change(servers: dict[str, ServerConfig]) -> None:
        old = servers.get(cfg.name)
        if old is not None:
            cfg.tools_on, cfg.always = list(old.tools_on), list(old.always)
        servers[cfg.name] = cfg

    config.update(change)
    out: list[str] = []
    if cfg.url and cfg.url.startswith("http://") and not _loopback(cfg.url):
        out.append(
            "plain http to another machine: the server's key and every call travel unencrypted"
        )
    if key:
        if not cfg.url:
            out.append("a key is for HTTP servers; a command gets its secrets through env")
        else:
            out.append(save_key(cfg.name, key))
    return out


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def remove_server(name: str, config: McpConfig | None = None) -> None:
    config = config or McpConfig()
    found: list[bool] = []

    def change(servers: dict[str, ServerConfig]) -> None:
        found.append(servers.pop(name, None) is not None)

    config.update(change)
    if not found or not found[0]:
        raise DeskLMError(f"no tool server named {name!r}")
    delete_key(name)


def import_mcp_json(
    path: Path | str, config: McpConfig | None = None
) -> tuple[list[str], list[str]]:
    """Copy the servers of another ``mcp.json`` (Claude Desktop's format) into DeskLM's.

    The file is only read, never changed. A server whose name DeskLM has already is skipped
    (remove it first to replace it). Headers that hold keys go to the keyring (where there is
    none, they are not kept: the note says so). Every imported server's tools start off.
    Returns (the names imported, notes)."""
    from desklm.engine.store.records import Unusable, parse_json

    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DeskLMError(f"could not read {p}: {e.strerror or e}") from None
    if len(raw) > 4 * 2**20:
        raise DeskLMError(f"{p} is {len(raw):,} bytes: too big for an mcp.json")
    try:
        data = parse_json(raw.decode("utf-8"))
    except (Unusable, UnicodeDecodeError) as e:
        why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
        raise DeskLMError(f"{p} is not an mcp.json ({why})") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise DeskLMError(
            f'{p} has no "mcpServers" object: not an mcp.json in Claude Desktop\'s format'
        )
    notes: list[str] = []
    parsed: list[tuple[ServerConfig, str | None]] = []
    for name, entry in servers.items():
        cfg, more = parse_server(str(name), entry)
        notes += more
        if cfg is None:
            continue
        key = None
        for h in [h for h in cfg.headers if SECRET_HEADER.search(h)]:
            value = cfg.headers.pop(h)
            if key is None:
                key, cfg.key_header = value, h
                if h.lower() == "authorization" and value.lower().startswith("bearer "):
                    key = value[7:].strip()
            else:
                notes.append(
                    f"server {cfg.name!r}: header {h!r} dropped (only one key per server is kept)"
                )
        parsed.append((cfg, key))
    config = config or McpConfig()
    added: list[str] = []

    def change(current: dict[str, ServerConfig]) -> None:
        added.clear()
        for cfg, _key in parsed:
            if cfg.name in current:
                notes.append(f"server {cfg.name!r} is already there; not imported again")
                continue
            current[cfg.name] = cfg
            added.append(cfg.name)

    config.update(change)
    for cfg, key in parsed:
        if key and cfg.name in added:
            notes.append(f"server {cfg.name!r}: " + save_key(cfg.name, key))
    return added, notes


# --- results --------------------------------------------------------------------------------------
def cut_text(text: str, limit: int = MAX_RESULT_BYTES) -> tuple[str, str]:
    """(text cut to ``limit`` UTF-8 bytes on a character boundary, a notice or "")."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, ""
    kept = data[:limit].decode("utf-8", errors="ignore")
    note = (
        f"the result was cut from {_size(len(data))} to {_size(len(kept.encode('utf-8')))} "
        f"(the limit is {_size(limit)})"
    )
    return kept, note


def _size(n: int) -> str:
    return (
        f"{n / 2**20:.1f} MB"
        if n >= 2**20
        else f"{math.ceil(n / 1024)} KB"
        if n >= 1024
        else f"{n} bytes"
    )


def result_text(result: Any) -> str:
    """A ``CallToolResult`` as text: text parts as they are, the rest described."""
    pieces: list[str] = []
    for part in getattr(result, "content", None) or []:
        kind = getattr(part, "type", "")
        if kind == "text":
            pieces.append(str(getattr(part, "text", "")))
        elif kind in ("image", "audio"):
            data = getattr(part, "data", "") or ""
            pieces.append(
                f"[{kind}: {getattr(part, 'mime_type', '') or '?'}, "
                f"{len(data) * 3 // 4:,} bytes, not shown to the model]"
            )
        elif kind == "resource":
            res = getattr(part, "resource", None)
            text = getattr(res, "text", None)
            pieces.append(
                str(text) if isinstance(text, str) else f"[resource {getattr(res, 'uri', '?')}]"
            )
        elif kind == "resource_link":
            pieces.append(f"[link: {getattr(part, 'uri', '?')}]")
        else:
            pieces.append(f"[{kind or 'unknown'} content]")
    structured = getattr(result, "structured_content", None)
    if not pieces and structured is not None:
        pieces.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(pieces).replace("\x00", "")


# --- the clients: one event loop in one thread --------------------------------------------------
class ServerState(StrEnum):
    OFF = "off"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ToolInfo:
    """A tool a server offers, and what the user chose for it. ``call_name`` is the name the
    model sees (the tool's own, or ``server_tool`` when two servers offer one name)."""

    server: str
    name: str
    description: str
    schema: dict[str, Any]
    on: bool = False
    always: bool = False
    call_name: str = ""

    @property
    def model_name(self) -> str:
        return self.call_name or self.name


@dataclass
class ServerStatus:
    name: str
    kind: str
    where: str
    state: ServerState
    reason: str = ""
    tools: list[ToolInfo] = field(default_factory=list)
    tools_on: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the server's status."""
        on = len(self.tools_on)
        if self.state == ServerState.READY:
            return f"running: {len(self.tools)} tool(s), {on} on"
        if self.state == ServerState.FAILED:
            return f"failed: {self.reason}"
        if self.state == ServerState.STARTING:
            return "starting…"
        return f"not running ({on} tool(s) on)" if on else "not running"


class _Live:
    """A server's client, on the hub's event loop."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.state = ServerState.OFF
        self.reason = ""
        self.tools: list[Any] = []
        self.client: Any = None
        self.stop: asyncio.Event | None = None
        self.dead: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.errlog: TextIO | None = None
        self.stopping = False
        self.http_status = 0  # the last HTTP error status an HTTP server answered

    def stderr_tail(self) -> str:
        """The last line the server wrote to stderr (its own reason, often)."""
        f = self.errlog
        if f is None:
            return ""
        try:
            f.flush()
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""


def _leaf(e: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


class ToolHub:
    """The MCP servers of ``mcp.json``, their clients and their tools.

    All clients run on one asyncio event loop in a daemon thread this object owns (started on
    first use). Every public method is sync and bounded: :meth:`start` by ``start_timeout``,
    :meth:`call` by ``call_timeout`` and by its ``cancelled`` callback. ``listeners`` are called
    (from the loop's thread) with a server's name whenever its state changes."""

    def __init__(
        self,
        config: McpConfig | None = None,
        *,
        start_timeout: float = START_TIMEOUT_S,
        call_timeout: float = CALL_TIMEOUT_S,
    ) -> None:
        self.config = config or McpConfig()
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.listeners: list[Callable[[str], None]] = []
        self._live: dict[str, _Live] = {}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._configs: dict[str, ServerConfig] = {}
        self.reload()

    # -- configuration --
    def reload(self) -> list[str]:
        """Read ``mcp.json`` again; returns its problems. Servers no longer listed stop."""
        configs = self.config.load()
        with self._lock:
            self._configs = configs
            gone = [n for n in self._live if n not in configs]
            for name, live in self._live.items():
                if name in configs:
                    live.cfg = configs[name]
        for name in gone:
            self.stop(name)
            with self._lock:
                self._live.pop(name, None)
        return list(self.config.problems)

    @property
    def problems(self) -> list[str]:
        return list(self.config.problems)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._configs)

    def server(self, name: str) -> ServerConfig:
        with self._lock:
            cfg = self._configs.get(name)
        if cfg is None:
            raise DeskLMError(
                f"no tool server named {name!r}"
                + (f"; known: {', '.join(self._configs)}" if self._configs else "; add one first")
            )
        return cfg

    def add(self, cfg: ServerConfig, key: str | None = None) -> list[str]:
        notes = add_server(cfg, key, self.config)
        was = self._live.get(cfg.name)
        if was is not None and was.state != ServerState.OFF:
            self.stop(cfg.name)  # it changed: the next use starts it as it is now
        self.reload()
        return notes

    def remove(self, name: str) -> None:
        self.server(name)
        self.stop(name)
        remove_server(name, self.config)
        self.reload()

    def import_file(self, path: Path | str) -> tuple[list[str], list[str]]:
        out = import_mcp_json(path, self.config)
        self.reload()
        return out

    def set_tool(self, server: str, tool: str, on: bool) -> None:
        """Turn one tool on or off (saved). Turning a tool off also forgets "always"."""
        self.server(server)

        def change(servers: dict[str, ServerConfig]) -> None:
            cfg = servers.get(server)
            if cfg is None:
                raise DeskLMError(f"no tool server named {server!r}")
            names = set(cfg.tools_on)
            if on:
                names.add(tool)
            else:
                names.discard(tool)
                cfg.always = [t for t in cfg.always if t != tool]
            cfg.tools_on = sorted(names)

        self.config.update(change)
        self.reload()
        self._changed(server)

    def allow_always(self, server: str, tool: str, allow: bool = True) -> None:
        """Remember (or forget) "always for this tool"."""

        def change(servers: dict[str, ServerConfig]) -> None:
            cfg = servers.get(server)
            if cfg is not None:
                names = set(cfg.always)
                (names.add if allow else names.discard)(tool)
                cfg.always = sorted(names)

        self.config.update(change)
        self.reload()
        self._changed(server)

    # -- status --
    def status(self, name: str) -> ServerStatus:
        cfg = self.server(name)
        live = self._live.get(name)
        state = live.state if live is not None else ServerState.OFF
        tools = (
            [self._info(cfg, t) for t in live.tools]
            if live is not None and state == ServerState.READY
            else []
        )
        return ServerStatus(
            name, cfg.kind, cfg.where, state, live.reason if live else "", tools, list(cfg.tools_on)
        )

    def statuses(self) -> list[ServerStatus]:
        return [self.status(n) for n in self.names()]

    @staticmethod
    def _info(cfg: ServerConfig, tool: Any) -> ToolInfo:
        schema = getattr(tool, "input_schema", None)
        return ToolInfo(
            cfg.name,
            str(tool.name),
            str(getattr(tool, "description", "") or ""),
            dict(schema) if isinstance(schema, dict) else {"type": "object"},
            on=tool.name in cfg.tools_on,
            always=tool.name in cfg.always,
        )

    def _changed(self, name: str) -> None:
        for fn in list(self.listeners):
            try:
                fn(name)
            except Exception:  # a listener's bug must not stop a server
                log.exception("tool status listener failed")

    # -- the event loop --
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="desklm-mcp", daemon=True)
                self._loop = loop
                self._thread.start()
                ready.wait(10)
            return self._loop

    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    # -- starting and stopping --
    def start(self, name: str, timeout: float | None = None) -> ServerStatus:
        """Start a server (a no-op when it runs) and list its tools. Raises DeskLMError with
        one line when it cannot start; the hub and the other servers go on."""
        cfg = self.server(name)
        with self._lock:
            live = self._live.get(name)
            if live is not None and live.state == ServerState.READY:
                return self.status(name)
            if live is not None and live.state == ServerState.STARTING:
                fut = None
            else:
                live = self._live[name] = _Live(cfg)
                live.state = ServerState.STARTING
                fut = self._submit(self._launch(live))
        self._changed(name)
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if fut is not None:
            try:
                fut.result(timeout=limit)
            except concurrent.futures.TimeoutError:
                pass
            except DeskLMError:
                pass
        while live.state == ServerState.STARTING and time.monotonic() < deadline:
            time.sleep(0.02)
        if live.state == ServerState.STARTING:
            live.reason = f"did not answer within {limit:.0f} s"
            self._cancel(live)
        if live.state != ServerState.READY:
            raise DeskLMError(f"tool server {name!r} failed: {live.reason or 'it stopped'}")
        return self.status(name)

    async def _launch(self, live: _Live) -> None:
        """Start ``live``'s runner task; return once it is ready or has failed."""
        live.stop, live.dead = asyncio.Event(), asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        live.task = asyncio.ensure_future(self._run(live, ready))
        with contextlib.suppress(Exception):
            await asyncio.shield(ready)

    def _transport(self, live: _Live, stack: contextlib.AsyncExitStack) -> Any:
        cfg = live.cfg
        if cfg.url:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            async def seen(response: Any) -> None:  # the SDK reports a refusal without it
                if response.status_code >= 400:
                    live.http_status = int(response.status_code)

            http = httpx2.AsyncClient(
                headers=request_headers(cfg),
                timeout=httpx2.Timeout(30.0, read=300.0),
                event_hooks={"response": [seen]},
            )
            stack.push_async_callback(http.aclose)
            return streamable_http_client(
                cfg.url, http_client=http, max_sse_event_size=MAX_SSE_EVENT
            )
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # closed by _run once it has read the server's last words
        live.errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        params = StdioServerParameters(
            command=cfg.command,
            args=list(cfg.args),
            env=dict(cfg.env) or None,
            cwd=cfg.cwd or None,
            encoding_error_handler="replace",
        )
        return stdio_client(params, errlog=live.errlog)

    async def _run(self, live: _Live, ready: asyncio.Future[None]) -> None:
        from mcp import Client
        from mcp_types import Implementation

        from desklm import __version__

        name = live.cfg.name
        assert live.stop is not None and live.dead is not None
        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = self._transport(live, stack)
                client = Client(
                    transport,
                    cache=None,
                    mode="auto",
                    client_info=Implementation(name="DeskLM", version=__version__),
                )
                async with client:
                    tools: list[Any] = []
                    cursor: str | None = None
                    for _ in range(100):
                        page = await client.list_tools(cursor=cursor)
                        tools += list(page.tools)
                        cursor = page.next_cursor
                        if not cursor:
                            break
                    live.tools, live.client = tools, client
                    live.state, live.reason = ServerState.READY, ""
                    ready.set_result(None)
                    self._changed(name)
                    log.info("tool server %s: running, %d tool(s)", name, len(tools))
                    await live.stop.wait()
        except BaseException as e:
            if not live.stopping and not live.reason:
                live.reason = self._why(live, e)
            if not ready.done():
                ready.set_exception(DeskLMError(live.reason or "stopped"))
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
        finally:
            live.client = None
            live.tools = [] if live.stopping else live.tools
            live.state = ServerState.OFF if live.stopping else ServerState.FAILED
            if live.state == ServerState.FAILED and not live.reason:
                live.reason = live.stderr_tail() or "it stopped"
            if live.state == ServerState.FAILED:
                log.warning("tool server %s: %s", name, live.reason)
            if not ready.done():
                ready.set_exception(DeskLMError(live.reason or "stopped"))
            live.dead.set()
            if live.errlog is not None:
                with contextlib.suppress(OSError):
                    live.errlog.close()
            self._changed(name)

    @staticmethod
    def _why(live: _Live, e: BaseException) -> str:
        """One line: why the server could not start or stopped."""
        e = _leaf(e)
        tail = live.stderr_tail()
        if isinstance(e, asyncio.CancelledError):
            return live.reason or "stopped"
        if isinstance(e, FileNotFoundError):
            return f"cannot run {live.cfg.command!r}: no such program"
        if isinstance(e, PermissionError):
            return f"cannot run {live.cfg.command!r}: permission denied"
        if isinstance(e, OSError) and not live.cfg.url:
            return f"cannot run {live.cfg.command!r}: {e.strerror or e}"
        text = " ".join(str(e).split()) or type(e).__name__
        if live.cfg.url:
            status = getattr(getattr(e, "response", None), "status_code", None) or live.http_status
            if status in (401, 403):
                return (
                    f"the server refused the key (HTTP {status})"
                    if key_for(live.cfg)
                    else f"the server wants a key (HTTP {status}): add it to the server"
                )
            if status:
                return f"the server answered HTTP {status}: {text[:200]}"
            if "connect" in type(e).__name__.lower() or "connect" in text.lower():
                return f"cannot connect to {live.cfg.url}: {text[:200]}"
        closed = "closed" in text.lower()
        if tail and (closed or not text):
            return f"the server stopped: {tail}"
        if closed:
            return "the server closed the connection"
        return text[:300]

    def _cancel(self, live: _Live) -> None:
        task, loop = live.task, self._loop
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(task.cancel)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stop a server's client (its process too, for stdio)."""
        live = self._live.get(name)
        if live is None or live.task is None or self._loop is None:
            if live is not None:
                live.state = ServerState.OFF
            return
        live.stopping = True
        loop = self._loop

        def signal() -> None:
            if live.stop is not None:
                live.stop.set()

        loop.call_soon_threadsafe(signal)

        async def wait() -> None:
            assert live.task is not None
            try:
                await asyncio.wait_for(asyncio.shield(live.task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                live.task.cancel()
            except Exception:
                pass

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(wait(), loop).result(timeout + 5)
        live.state = ServerState.OFF
        live.reason = ""
        self._changed(name)

    def close(self) -> None:
        """Stop every server and the event loop."""
        for name in list(self._live):
            self.stop(name)
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()

    # -- the tools of a turn --
    def active_tools(self, start: bool = True) -> tuple[list[ToolInfo], list[str]]:
        """The tools that are on, on servers that run (started here when ``start``), each with
        the name the model will see; and one note per server that could not run."""
        tools: list[ToolInfo] = []
        notes: list[str] = []
        for name in self.names():
            cfg = self.server(name)
            if not cfg.tools_on:
                continue
            live = self._live.get(name)
            if start and (live is None or live.state == ServerState.OFF):
                try:
                    self.start(name)
                except DeskLMError as e:
                    notes.append(str(e))
                    continue
            st = self.status(name)
            if st.state == ServerState.FAILED:
                notes.append(
                    f"tool server {name!r} failed: {st.reason} (its tools are off "
                    "for this turn; /tools start restarts it)"
                )
                continue
            tools += [t for t in st.tools if t.on]
        counts: dict[str, int] = {}
        for t in tools:
            counts[t.name] = counts.get(t.name, 0) + 1
        out = [
            ToolInfo(
                t.server,
                t.name,
                t.description,
                t.schema,
                t.on,
                t.always,
                call_name=t.name
                if counts[t.name] == 1
                else re.sub(r"[^A-Za-z0-9_]", "_", f"{t.server}_{t.name}"),
            )
            for t in tools
        ]
        return out, notes

    # -- calls --
    def call(
        self,
        tool: ToolInfo,
        arguments: dict[str, Any],
        cancelled: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> CallOutcome:
        """Call a tool; never raises for what the server does: the outcome says it."""
        limit = self.call_timeout if timeout is None else timeout
        t0 = time.monotonic()
        live = self._live.get(tool.server)
        if live is None or live.state != ServerState.READY or live.client is None:
            why = live.reason if live is not None and live.reason else "it is not running"
            return CallOutcome("error", "", f"tool server {tool.server!r}: {why}", 0.0)
        fut = self._submit(self._call(live, tool.name, arguments, limit))
        while True:
            try:
                result = fut.result(timeout=0.05)
                break
            except concurrent.futures.TimeoutError:
                if cancelled is not None and cancelled():
                    fut.cancel()
                    return CallOutcome(
                        "stopped", "", "stopped before the tool answered", time.monotonic() - t0
                    )
                if time.monotonic() - t0 > limit + 5:  # the loop itself is stuck
                    fut.cancel()
                    return CallOutcome(
                        "error",
                        "",
                        f"the tool did not answer within {limit:.0f} s",
                        time.monotonic() - t0,
                    )
            except concurrent.futures.CancelledError:
                return CallOutcome(
                    "stopped", "", "stopped before the tool answered", time.monotonic() - t0
                )
            except DeskLMError as e:
                return CallOutcome("error", "", str(e), time.monotonic() - t0)
            except Exception as e:
                text = " ".join(str(_leaf(e)).split())[:300] or type(e).__name__
                return CallOutcome("error", "", f"the call failed: {text}", time.monotonic() - t0)
        text, note = cut_text(result_text(result))
        status = "error" if getattr(result, "is_error", False) else "ok"
        if status == "error":
            note = "; ".join(x for x in ("the tool reported an error", note) if x)
        return CallOutcome(status, text, note, time.monotonic() - t0)

    async def _call(self, live: _Live, name: str, arguments: dict[str, Any], timeout: float) -> Any:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        client, dead = live.client, live.dead
        if client is None or dead is None:
            raise DeskLMError(f"tool server {live.cfg.name!r} is not running")
        call = asyncio.ensure_future(client.call_tool(name, arguments))
        died = asyncio.ensure_future(dead.wait())
        try:
            done, _ = await asyncio.wait(
                {call, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for f in (call, died):
                if not f.done():
                    f.cancel()
        if call in done:
            try:
                return call.result()
            except MCPError as e:
                if e.code != CONNECTION_CLOSED:
                    raise DeskLMError(
                        f"the server answered with an error: {' '.join(str(e).split())[:300]}"
                    ) from None
                await asyncio.sleep(0.2)  # let the process's last words reach stderr
                live.reason = "it stopped during a call" + (
                    f": {live.stderr_tail()}" if live.stderr_tail() else ""
                )
                live.state = ServerState.FAILED  # now, not when its task has wound down
                if live.stop is not None:
                    live.stop.set()
                raise DeskLMError(f"tool server {live.cfg.name!r} {live.reason}") from None
        if died in done:
            raise DeskLMError(
                f"tool server {live.cfg.name!r} stopped during the call: "
                f"{live.reason or 'no reason given'}"
            )
        raise DeskLMError(f"the tool {name} did not answer within {timeout:.0f} s")


@dataclass
class CallOutcome:
    status: str  # "ok" | "error" (the tool said so, or the call failed) | "stopped"
    text: str
    note: str
    seconds: float


# --- consent, limits, and the calls of one turn ---------------------------------------------
class Decision(StrEnum):
    ONCE = "once"  # allow this call
    ALWAYS = "always"  # allow this tool from now on (saved; the Tools dialog can undo it)
    DENY = "deny"


@dataclass
class ToolRequest:
    """What the user is asked about: the tool, its server and the arguments, as the model
    wrote them. ``cancelled()`` turns True when the turn is stopped while the user decides."""

    server: str
    tool: str
    arguments: dict[str, Any]
    call_id: str
    cancelled: Callable[[], bool] = lambda: False

    def arguments_text(self, limit: int = 4000) -> str:
        text = json.dumps(self.arguments, ensure_ascii=False, indent=2)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def summary(self, limit: int = 200) -> str:
        args = json.dumps(self.arguments, ensure_ascii=False)
        if len(args) > limit:
            args = args[: limit - 1] + "…"
        return f"{self.tool} ({self.server}) {args}"


Consent = Callable[[ToolRequest], Decision]


@dataclass
class ToolStep:
    """One tool call of a turn, as saved with the chat.

    ``status``: ``ok``, ``error`` (the tool or the server failed: ``note`` says why),
    ``denied`` (the user said no), ``stopped`` (Stop was pressed), ``limit`` (the per-turn limit
    was reached; the call was not made). ``result`` is what the model reads back."""

    id: str
    server: str
    tool: str
    name: str  # as the model called it
    arguments: dict[str, Any]
    status: str = "asking"
    result: str = ""
    note: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": self.server,
            "tool": self.tool,
            "name": self.name,
            "arguments": self.arguments,
            "status": self.status,
            "result": self.result,
            "note": self.note,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolStep:
        return cls(
            id=str(d.get("id") or uuid.uuid4().hex[:12]),
            server=str(d.get("server", "")),
            tool=str(d.get("tool", "")),
            name=str(d.get("name") or d.get("tool", "")),
            arguments=dict(d.get("arguments") or {}),
            status=str(d.get("status", "")),
            result=str(d.get("result", "")),
            note=str(d.get("note", "")),
            seconds=float(d.get("seconds") or 0.0),
        )

    def model_text(self) -> str:
        """What the model reads back for this call: the result, or why there is none."""
        if self.status == "ok":
            return self.result + (f"\n[DeskLM: {self.note}]" if self.note else "")
        if self.status == "error":
            return (self.result + "\n" if self.result else "") + f"[error: {self.note}]"
        if self.status == "denied":
            return "[the user denied this call; answer without it]"
        if self.status == "limit":
            return f"[not called: {self.note}; answer with what you have]"
        return "[stopped by the user]"

    def line(self) -> str:
        """One line for the transcript: what was called and how it went."""
        args = json.dumps(self.arguments, ensure_ascii=False)
        args = args if len(args) <= 120 else args[:119] + "…"
        how = {
            "ok": f"done in {self.seconds:.1f} s",
            "error": f"failed: {self.note}",
            "denied": "denied",
            "stopped": "stopped",
            "limit": self.note,
            "asking": "waiting for your permission",
        }.get(self.status, self.status)
        return f"{self.tool} ({self.server}) {args}: {how}"


class ToolTurn:
    """The tool calls of one turn: consent first, then the call; at most ``limit`` calls."""

    def __init__(
        self,
        hub: ToolHub,
        tools: list[ToolInfo],
        consent: Consent | None,
        cancelled: Callable[[], bool],
        limit: int,
    ) -> None:
        self.hub, self.tools, self.consent = hub, tools, consent
        self.cancelled, self.limit = cancelled, limit
        self.calls = 0
        self.always: set[tuple[str, str]] = {(t.server, t.name) for t in tools if t.always}

    def find(self, name: str) -> ToolInfo | None:
        return next((t for t in self.tools if t.model_name == name), None)

    def run(
        self,
        name: str,
        arguments: dict[str, Any],
        on_step: Callable[[ToolStep], None] | None = None,
    ) -> ToolStep:
        tool = self.find(name)
        step = ToolStep(
            uuid.uuid4().hex[:12],
            tool.server if tool else "",
            tool.name if tool else name,
            name,
            arguments,
        )
        if tool is None:
            step.status = "error"
            step.note = f"no tool named {name!r} is on"
            return step
        if self.calls >= self.limit:
            step.status = "limit"
            step.note = f"the limit of {self.limit} tool call(s) per turn was reached"
            return step
        self.calls += 1
        if on_step is not None:
            on_step(step)  # shown while the user decides
        if (tool.server, tool.name) in self.always:
            decision = Decision.ONCE
        elif self.consent is None:
            decision = Decision.DENY
            step.note = "no one was there to allow it"
        else:
            req = ToolRequest(tool.server, tool.name, arguments, step.id, self.cancelled)
            try:
                decision = Decision(self.consent(req))
            except (ValueError, DeskLMError) as e:
                decision, step.note = Decision.DENY, str(e)
        if self.cancelled():
            step.status, step.note = "stopped", "stopped while asking"
            return step
        if decision == Decision.DENY:
            step.status = "denied"
            return step
        if decision == Decision.ALWAYS:
            self.always.add((tool.server, tool.name))
            try:
                self.hub.allow_always(tool.server, tool.name)
            except DeskLMError as e:  # allowed for this chat, at least
                log.warning("could not save 'always' for %s: %s", tool.name, e)
        out = self.hub.call(tool, arguments, self.cancelled)
        step.status, step.result, step.note, step.seconds = (
            out.status,
            out.text,
            out.note,
            out.seconds,
        )
        return step
