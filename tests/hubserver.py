"""A small HTTP server on 127.0.0.1 that answers the Hugging Face endpoints huggingface_hub
calls to list and download files: the real client, real HTTP, no internet.

Endpoints: ``GET /api/models/{repo}/tree/{rev}``, ``HEAD|GET /{repo}/resolve/{rev}/{path}``
(with Range). Faults for tests: ``break_after`` (drop the connection after N body bytes, for
the first ``break_times`` requests), ``corrupt`` (serve bytes that fail the checksum),
``gated`` (401 for everything).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFiles:
    files: dict[str, dict[str, Path]] = field(default_factory=dict)  # repo -> path -> file
    break_after: int | None = None
    break_times: int = 0
    corrupt: bool = False
    gated: bool = False
    chunk_delay: float = 0.0  # seconds per 1 MB sent: a slow link
    requests: list[str] = field(default_factory=list)
    _sha: dict[Path, str] = field(default_factory=dict)

    def sha(self, p: Path) -> str:
        if p not in self._sha:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while b := f.read(1 << 20):
                    h.update(b)
            self._sha[p] = h.hexdigest()
        return self._sha[p]


def make_handler(hub: HubFiles) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, obj: object, code: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _err(self, code: int, msg: str) -> None:
            self.send_response(code)
            self.send_header("X-Error-Message", msg)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            if hub.gated:
                self._err(401, "Access to this repo is restricted")
                return
            path = self.path.split("?")[0]
            m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?$", path)
            if m:
                repo = hub.files.get(m.group(1))
                if repo is None:
                    self._err(404, "Repository not found")
                    return
                self._json(
                    [
                        {
                            "type": "file",
                            "oid": "1" * 40,
                            "size": p.stat().st_size,
                            "path": name,
                            "lfs": {
                                "oid": hub.sha(p),
                                "size": p.stat().st_size,
                                "pointerSize": 130,
                            },
                        }
                        for name, p in repo.items()
                    ]
                )
                return
            m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            repo = hub.files.get(m.group(1)) if m else None
            f = repo.get(m.group(3)) if repo and m else None
            if f is None:
                self._err(404, "Entry not found")
                return
            size = f.stat().st_size
            start, end = 0, size - 1
            rng = self.headers.get("Range")
            if rng:
                rm = re.match(r"bytes=(\d+)-(\d*)", rng)
                if rm:
                    start = int(rm.group(1))
                    end = min(int(rm.group(2)), size - 1) if rm.group(2) else size - 1
            self.send_response(206 if rng else 200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hub.sha(f)}"')
            self.send_header("X-Linked-Etag", f'"{hub.sha(f)}"')
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            breaking = hub.break_after is not None and hub.break_times > 0
            if breaking:
                hub.break_times -= 1
            sent = 0
            with open(f, "rb") as fh:
                fh.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = fh.read(min(1 << 20, left))
                    if hub.corrupt:
                        chunk = bytes(b ^ 0xFF for b in chunk[:16]) + chunk[16:]
                    if breaking and sent + len(chunk) > hub.break_after:
                        self.wfile.write(chunk[: max(0, hub.break_after - sent)])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(chunk)
                    if hub.chunk_delay:
                        time.sleep(hub.chunk_delay)
                    sent += len(chunk)
                    left -= len(chunk)

    return Handler


class HubServer:
    def __init__(self, hub: HubFiles) -> None:
        self.hub = hub
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
