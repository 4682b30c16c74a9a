"""Saved server connections (name, URL, model) and where their API keys live.

Connections are kept in the app config (``settings.json``, key ``"connections"``): name, URL,
model, and optionally the *name* of an environment variable holding the key. The key itself is
never written there, nor logged: it goes to the OS keyring through ``keyring`` (service
``desklm``, user ``connection:<name>``).

Where the machine has no keyring backend (a headless Linux box without Secret Service: keyring
reports its ``fail`` backend), a key is not stored at all: the connection is saved without it
and the note says so; give the key through an environment variable (the connection's
``api_key_env``, or ``desklm chat --api-key-env VAR``) or type it again when connecting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from desklm.engine.backends.remote import check_url
from desklm.engine.store.files import AppConfig
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

SERVICE = "desklm"
_NAME = re.compile(r"^[^\x00-\x1f]{1,64}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Connection:
    name: str
    url: str
    model: str = ""
    api_key_env: str = ""  # the NAME of an environment variable with the key, never the key

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Connection:
        return cls(
            name=str(d["name"]),
            url=str(d["url"]),
            model=str(d.get("model") or ""),
            api_key_env=str(d.get("api_key_env") or ""),
        )


def _user(name: str) -> str:
    return f"connection:{name}"


def keyring_status() -> tuple[bool, str]:
    """(usable, one-line description) of the keyring backend this machine has."""
    try:
        import keyring

        kr = keyring.get_keyring()
        prio = float(getattr(kr, "priority", 0) or 0)
    except Exception as e:  # a broken keyring install must not break connecting
        return False, f"the keyring is unusable ({type(e).__name__})"
    name = type(kr).__module__ + "." + type(kr).__name__
    if prio <= 0:
        return False, f"no OS keyring is available here (keyring backend: {name})"
    plain = "plaintext" in type(kr).__name__.lower()
    return True, (
        f"keyring backend {name}" + (" (stores keys unencrypted in a file)" if plain else "")
    )


def list_connections(cfg: AppConfig | None = None) -> list[Connection]:
    data = (cfg or AppConfig()).load().get("connections")
    out = []
    for d in data if isinstance(data, list) else []:
        try:
            out.append(Connection.from_dict(d))
        except (KeyError, TypeError):
            log.warning("a saved connection is damaged; skipped")
    return out


def find_connection(name: str, cfg: AppConfig | None = None) -> Connection | None:
    return next((c for c in list_connections(cfg) if c.name == name), None)


def save_connection(
    conn: Connection, api_key: str | None = None, cfg: AppConfig | None = None
) -> list[str]:
    """Save (or replace, by name) a connection; the key goes to the keyring. Returns notes
    (plain http on a private network; where the key went, or why it was not kept)."""
    if not _NAME.match(conn.name.strip() or ""):
        raise DeskLMError("a connection needs a name (up to 64 characters)")
    conn.name = conn.name.strip()
    if conn.api_key_env and not _ENV.match(conn.api_key_env):
        raise DeskLMError(f"{conn.api_key_env!r} is not an environment variable name")
    url = check_url(conn.url)
    conn.url = url.root
    notes = [url.notice] if url.notice else []
    cfg = cfg or AppConfig()
    data = cfg.load()
    kept = [c for c in list_connections(cfg) if c.name != conn.name]
    data["connections"] = [c.to_dict() for c in [*kept, conn]]
    data.pop("schema", None)
    cfg.save(data)
    if api_key:
        ok, what = keyring_status()
        if not ok:
            notes.append(
                f"{what}: the API key was not saved; put it in an environment "
                "variable and name it in the connection, or enter it when connecting"
            )
        else:
            import keyring
            from keyring.errors import KeyringError

            try:
                keyring.set_password(SERVICE, _user(conn.name), api_key)
                notes.append(f"API key saved in the OS keyring ({what})")
            except KeyringError as e:
                notes.append(
                    f"the keyring refused the API key ({type(e).__name__}): it was "
                    "not saved; enter it when connecting"
                )
    return notes


def delete_connection(name: str, cfg: AppConfig | None = None) -> None:
    cfg = cfg or AppConfig()
    data = cfg.load()
    data["connections"] = [c.to_dict() for c in list_connections(cfg) if c.name != name]
    data.pop("schema", None)
    cfg.save(data)
    if keyring_status()[0]:
        import keyring
        from keyring.errors import KeyringError, PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError, KeyringError):
            keyring.delete_password(SERVICE, _user(name))


def api_key_for(conn: Connection) -> str | None:
    """The connection's key: from its environment variable if it names one, else the keyring;
    None when there is none."""
    if conn.api_key_env:
        value = os.environ.get(conn.api_key_env)
        if value:
            return value
    if keyring_status()[0]:
        import keyring
        from keyring.errors import KeyringError

        try:
            return keyring.get_password(SERVICE, _user(conn.name)) or None
        except KeyringError as e:
            log.warning("could not read the API key from the keyring: %s", type(e).__name__)
    return None


def resolve_server(
    server: str,
    api_key_env: str | None = None,
    model: str | None = None,
    cfg: AppConfig | None = None,
) -> tuple[str, str | None, str | None]:
    """What ``desklm chat --server X`` means: X is a saved connection's name or a URL.
    Returns (url, api key or None, model or None)."""
    conn = find_connection(server, cfg) if "/" not in server and ":" not in server else None
    key = None
    if api_key_env:
        if not _ENV.match(api_key_env):
            raise DeskLMError(f"--api-key-env {api_key_env!r} is not an environment variable name")
        key = os.environ.get(api_key_env)
        if not key:
            raise DeskLMError(
                f"--api-key-env {api_key_env}: that environment variable is not set (or empty)"
            )
    if conn is None and not key:  # a URL saved as a connection: use that connection's key
        root = check_url(server, resolve=False).root
        conn = next((c for c in list_connections(cfg) if c.url == root), None)
        if conn is not None:
            return server, api_key_for(conn), model or conn.model or None
    if conn is not None:
        return conn.url, key or api_key_for(conn), model or conn.model or None
    return server, key, model
