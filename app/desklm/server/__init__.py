"""DeskLM's opt-in OpenAI-compatible API server (ASGI on uvicorn, its own thread). No Qt here.

The window and ``desklm serve`` use :class:`ApiServer`; requests become jobs on the shared
inference :class:`~desklm.engine.runner.Runner`.
"""

from desklm.server.app import RequestRecord
from desklm.server.server import DEFAULT_HOST, DEFAULT_PORT, ApiServer, ServerState, is_loopback

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ApiServer",
    "RequestRecord",
    "ServerState",
    "is_loopback",
]
