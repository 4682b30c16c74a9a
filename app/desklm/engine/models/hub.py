"""Hugging Face downloads: list a repo's GGUF files, estimate their fit, download, verify.

Nothing here runs unless the user asks for it (the model dialog or ``desklm models pull``).
``HF_HUB_OFFLINE`` is honoured, and ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` are read at call time
(huggingface_hub reads them once at import).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desklm.engine.models.gguf_info import GGUFInfo, read_gguf_header
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

# Small instruct models with GGUF builds, for a first download.
CURATED = [
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Qwen 2.5 0.5B Instruct (~0.4 GB, fast everywhere)"),
    ("HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", "SmolLM2 360M Instruct (~0.3 GB)"),
    ("unsloth/gemma-3-1b-it-GGUF", "Gemma 3 1B instruct (~0.8 GB)"),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama 3.2 1B Instruct (~0.8 GB)"),
    ("Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Qwen 2.5 1.5B Instruct (~1.1 GB)"),
    ("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama 3.2 3B Instruct (~2 GB)"),
]


class DownloadCancelled(DeskLMError):
    """The user cancelled a download. huggingface_hub discards the partial file: a later
    download starts again (a dropped connection *during* a download is resumed with a range
    request, though)."""


@dataclass
class RemoteFile:
    repo_id: str
    path: str
    size: int
    sha256: str | None  # from the hub's LFS metadata

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
        }


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _online() -> None:
    if offline():
        raise DeskLMError("HF_HUB_OFFLINE is set: DeskLM will not contact Hugging Face")
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False  # the env var is the source of truth, read now


def _reason(e: BaseException) -> str:
    name = type(e).__name__
    msg = " ".join(str(e).split())
    # the HTTP status decides: huggingface_hub turns some 401s into RepositoryNotFoundError
    # (the Hub answers 401 for private repos), so the exception class alone is ambiguous
    status = getattr(getattr(e, "response", None), "status_code", None)
    if (
        status in (401, 403)
        or "GatedRepo" in name
        or (status is None and ("401" in msg or "403" in msg))
    ):
        return "access denied: this repo is gated or private (log in with `hf auth login`)"
    if status == 404 or "NotFound" in name or "404" in msg:
        return "repository or file not found (check the name; private repos need a token)"
    if (
        isinstance(e, urllib.error.URLError | ConnectionError | TimeoutError | OSError)
        or "Connect" in name
        or "Timeout" in name
        or "Network" in name
    ):
        return f"cannot reach Hugging Face ({msg[:160] or name})"
    return f"{name}: {msg[:200]}"


def check_reachable(timeout: float = 5.0) -> None:
    """Fail fast when the hub cannot be reached: name lookup and a TCP connect to the
    endpoint, given ``timeout`` seconds in all (huggingface_hub's own retries took ~22 s to
    give up without a network). Raises DeskLMError with the reason."""
    import socket
    from urllib.parse import urlsplit

    _online()
    url = urlsplit(endpoint())
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
            result.append(None)
        except OSError as e:
            result.append(e)

    t = threading.Thread(target=probe, name="hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise DeskLMError(
            f"cannot reach Hugging Face ({host}: no answer in {timeout:.0f} s; "
            "check the connection)"
        )
    err = result[0]
    if err is not None:
        why = getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__
        raise DeskLMError(f"cannot reach Hugging Face ({host}: {why})")


def list_gguf_files(repo_id: str) -> list[RemoteFile]:
    """The ``.gguf`` files of a repo, with sizes and the sha256 the hub reports."""
    _online()
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    repo_id = repo_id.strip()
    if not repo_id or repo_id.count("/") != 1:
        raise DeskLMError(f"'{repo_id}' is not a repo id (expected owner/name)")
    try:
        entries = list(HfApi(endpoint=endpoint()).list_repo_tree(repo_id, recursive=True))
    except Exception as e:
        raise DeskLMError(f"{repo_id}: {_reason(e)}") from None
    out = []
    for f in entries:
        if isinstance(f, RepoFile) and f.path.lower().endswith(".gguf"):
            sha = f.lfs.sha256 if f.lfs is not None else None
            out.append(RemoteFile(repo_id, f.path, int(f.size), sha))
    if not out:
        raise DeskLMError(f"{repo_id}: no .gguf files in this repo")
    return sorted(out, key=lambda r: r.path)


def remote_header(f: RemoteFile, first: int = 8 << 20, limit: int = 64 << 20) -> GGUFInfo:
    """Read just the GGUF header with HTTP range requests (for a fit estimate before download)."""
    _online()
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(f.repo_id, f.path, endpoint=endpoint())
    n = first
    while True:
        headers = {**build_hf_headers(), "Range": f"bytes=0-{min(n, f.size) - 1}"}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=30
            ) as r:
                data = r.read(n)
        except Exception as e:
            raise DeskLMError(f"{f.path}: {_reason(e)}") from None
        try:
            return read_gguf_header(data, f.size, Path(f.path).name)
        except DeskLMError as e:
            if (
                "truncated in the" in str(e)
                and "tensor data" not in str(e)
                and n < min(limit, f.size)
            ):
                n *= 2
                continue
            raise


def _progress_class(
    on_progress: Callable[[int, int], None] | None, cancel: threading.Event | None
) -> type:
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Progress(hf_tqdm):
        """huggingface_hub's progress bar, silenced, reporting to us and checking Cancel."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            self._total = int(kwargs.get("total") or 0)
            self._done = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("download cancelled")
            self._done += int(n or 0)
            if on_progress is not None:
                on_progress(self._done, self._total)
            return super().update(n)

    return Progress


def sha256_of(path: Path, cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("download cancelled")
            h.update(block)
    return h.hexdigest()


def download(
    f: RemoteFile,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download into the Hugging Face cache and verify its sha256. A connection dropped
    mid-transfer is resumed with a range request; a cancelled download leaves nothing behind."""
    _online()
    from huggingface_hub import hf_hub_download

    t0 = time.monotonic()
    try:
        path = Path(
            hf_hub_download(
                f.repo_id,
                f.path,
                endpoint=endpoint(),
                cache_dir=str(cache_dir()),
                tqdm_class=_progress_class(on_progress, cancel),
            )
        )
    except DownloadCancelled:
        raise
    except Exception as e:
        raise DeskLMError(f"download of {f.path} failed: {_reason(e)}") from None
    if f.sha256:
        got = sha256_of(path, cancel)
        if got != f.sha256:
            blob = path.resolve()
            for p in (path, blob):
                with contextlib.suppress(OSError):
                    p.unlink()
            raise DeskLMError(
                f"{f.path}: checksum mismatch (expected sha256 {f.sha256[:12]}…, "
                f"got {got[:12]}…); the file was deleted, try again"
            )
    log.info("downloaded %s/%s in %.1fs", f.repo_id, f.path, time.monotonic() - t0)
    return path


def cached_gguf_files() -> list[dict[str, Any]]:
    """GGUF files already in the Hugging Face cache (no network)."""
    root = cache_dir()
    out: list[dict[str, Any]] = []
    if not root.exists():
        return out
    for snap in root.glob("models--*/snapshots/*"):
        repo = snap.parent.parent.name[len("models--") :].replace("--", "/")
        for p in snap.rglob("*.gguf"):
            try:
                size = p.stat().st_size
            except OSError:
                continue  # a dangling link: an interrupted or deleted download
            out.append(
                {
                    "name": p.name,
                    "path": str(p),
                    "repo_id": repo,
                    "size": size,
                    "source": "hugging face cache",
                }
            )
    return sorted(out, key=lambda d: (d["repo_id"], d["name"]))
