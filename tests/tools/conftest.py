"""Fixtures for the tool tests: a real MCP server written with the SDK (tests/tools/
mcp_server.py), over stdio or Streamable HTTP on 127.0.0.1, and a ToolHub in the test's own
config dir."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring

from desklm.engine.chat.tools import McpConfig, ServerConfig, ToolHub

SERVER = Path(__file__).with_name("mcp_server.py")


def stdio_config(name: str = "t") -> ServerConfig:
    return ServerConfig(name, command=sys.executable, args=[str(SERVER), "stdio"])


@pytest.fixture
def hub(data_dir: Path) -> Iterator[ToolHub]:
    h = ToolHub(McpConfig(), start_timeout=60, call_timeout=60)
    yield h
    h.close()


@pytest.fixture
def stdio_hub(hub: ToolHub) -> ToolHub:
    hub.add(stdio_config())
    return hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[tuple[str, str]]:
    """(the server's URL, the key it wants)."""
    port, key = free_port(), "mcp-secret-0123456789"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port), key],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "died") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp", key
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    """A real keyring backend (keyrings.alt's file keyring in a temp dir): this machine has
    no Secret Service."""
    before = keyring.get_keyring()
    kr = PlaintextKeyring()
    kr.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(before)
