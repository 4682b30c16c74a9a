"""What a saved file may contain, checked in one place: conversation records and settings.json.

Files on disk are data from the past (an older DeskLM, a hand edit, another program, a disk
error), so every field is checked for its type and range before anything uses it. The rule:
keep what is valid, drop or repair what is not, and say what was dropped and why. Only a file
whose content is unusable as a whole (not JSON, not an object) is moved aside by the store.

* :func:`parse_json` reads JSON text without the failure modes of ``json.loads`` on hostile
  input (integers with thousands of digits, nesting deeper than the recursion limit).
* :func:`clean_conversation` returns a record every reader can use as is.
* :func:`clean_app_config` returns settings.json's content with every known key valid.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from typing import Any

MAX_TIME = 253402300799.0  # 9999-12-31: the last moment datetime.fromtimestamp can show
MAX_TEXT = 10_000_000  # characters in one message
MAX_B64 = 1 << 20  # window geometry / state blobs
ROLES = ("user", "assistant")
SCALARS = (str, int, float, bool, type(None))


class Unusable(ValueError):
    """The content as a whole cannot be used (not JSON, too deeply nested, not an object)."""


def _parse_int(text: str) -> int | float:
    # 5,000-digit integers raise in int(); no field of ours is bigger than 2**63 anyway
    return int(text) if len(text) <= 40 else math.inf


def parse_json(text: str) -> Any:
    """``json.loads`` that raises :class:`Unusable` (a ValueError) for every unusable text."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise Unusable("nested too deeply") from None
    except ValueError as e:
        raise Unusable(f"not valid JSON ({type(e).__name__})") from None


def _time(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) and 0 <= f <= MAX_TIME else None


def _scalars(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        if isinstance(v, SCALARS) and not (isinstance(v, float) and not math.isfinite(v)):
            out[k] = v
    return out


def _clean_stats(st: Any) -> dict[str, Any] | None:
    if not isinstance(st, dict):
        return None
    out = _scalars(st)
    trimmed = st.get("trimmed")
    if isinstance(trimmed, list):
        out["trimmed"] = [_scalars(t) for t in trimmed if isinstance(t, dict)]
    return out


def clean_message(m: Any, _depth: int = 0) -> tuple[dict[str, Any] | None, str]:
    """(the message fit for use, "") or (None, why it was skipped). Its versions and
    attachments (schema 2, chat.branches) are checked the same way, to a bounded depth."""
    if not isinstance(m, dict):
        return None, f"not an object but {type(m).__name__}"
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        return None, f"unknown role {str(role)[:20]!r}"
    if not isinstance(content, str):
        return None, f"content is {type(content).__name__}, not text"
    if len(content) > MAX_TEXT:
        return None, f"content of {len(content):,} characters is too long"
    out: dict[str, Any] = {
        "id": m["id"] if isinstance(m.get("id"), str) and m["id"] else uuid.uuid4().hex[:12],
        "role": role,
        "content": content.replace("\x00", ""),
        "created": _time(m.get("created")) or 0.0,
    }
    stats = _clean_stats(m.get("stats"))
    if stats is not None:
        out["stats"] = stats
    if role == "assistant" and "tool_calls" in m:
        calls = clean_tool_calls(m.get("tool_calls"))
        if calls:
            out["tool_calls"] = calls
    from desklm.engine.chat.branches import MAX_DEPTH, clean_tree_fields

    if _depth < MAX_DEPTH:
        clean_tree_fields(m, out, lambda x: clean_message(x, _depth + 1))
    return out, ""


TOOL_STATUSES = ("ok", "error", "denied", "stopped", "limit")
MAX_TOOL_CALLS = 256  # kept per message when reading a file
MAX_ARGUMENTS = 1_000_000  # characters of a call's arguments, as JSON


def clean_tool_calls(items: Any) -> list[dict[str, Any]]:
    """Schema 3: the tool calls of a reply (``ToolStep.to_dict()``), each field checked;
    a call whose fields are of the wrong type is dropped."""
    out: list[dict[str, Any]] = []
    if not isinstance(items, list):
        return out
    for c in items[:MAX_TOOL_CALLS]:
        if not isinstance(c, dict):
            continue
        raw = {k: c.get(k) for k in ("id", "server", "tool", "name", "result", "note")}
        texts = {k: v for k, v in raw.items() if isinstance(v, str)}
        if len(texts) != len(raw) or not texts["tool"]:
            continue
        if len(texts["result"]) > MAX_TEXT or c.get("status") not in TOOL_STATUSES:
            continue
        args = c.get("arguments")
        try:
            ok = isinstance(args, dict) and len(json.dumps(args)) <= MAX_ARGUMENTS
        except (TypeError, ValueError, RecursionError):
            ok = False
        if not ok:
            continue
        secs = c.get("seconds", 0.0)
        seconds = (
            float(secs)
            if isinstance(secs, int | float)
            and not isinstance(secs, bool)
            and math.isfinite(secs)
            and secs >= 0
            else 0.0
        )
        rec: dict[str, Any] = {k: v.replace("\x00", "") for k, v in texts.items()}
        rec.update({"arguments": args, "status": c["status"], "seconds": seconds})
        out.append(rec)
    return out


def clean_conversation(data: dict[str, Any], stem: str) -> tuple[dict[str, Any], list[str]]:
    """A conversation record (already known to be an object with a ``messages`` list) with
    every field of the right type; returns it and a note for everything dropped or repaired."""
    notes: list[str] = []
    rec = dict(data)
    if rec.get("id") != stem:
        rec["id"] = stem
    title = rec.get("title")
    if not isinstance(title, str) or "\x00" in title:
        if title is not None:
            notes.append("title is not text")
        rec["title"] = "New chat"
    rec["title"] = " ".join(rec["title"].split())[:200]
    for key in ("created", "updated"):
        v = _time(rec.get(key))
        if v is None and key in rec:
            notes.append(f"'{key}' is not a time ({str(rec[key])[:30]!r})")
        rec[key] = v or 0.0
    if not isinstance(rec.get("model"), str):
        rec["model"] = None
    settings = rec.get("settings")
    rec["settings"] = _scalars(settings)
    if settings is not None and not isinstance(settings, dict):
        notes.append("'settings' is not an object")
    if not isinstance(rec["settings"].get("system_prompt", ""), str):
        rec["settings"].pop("system_prompt")
    msgs, skipped = [], []
    for i, m in enumerate(data["messages"]):
        good, why = clean_message(m)
        if good is None:
            skipped.append(f"#{i + 1} ({why})")
        else:
            msgs.append(good)
    if skipped:
        notes.append(
            f"skipped {len(skipped)} message(s): "
            + ", ".join(skipped[:3])
            + (" …" if len(skipped) > 3 else "")
        )
    rec["messages"] = msgs
    start = rec.get("context_start", 0)
    rec["context_start"] = (
        start
        if isinstance(start, int) and not isinstance(start, bool) and 0 <= start <= len(msgs)
        else 0
    )
    return rec, notes


# --- settings.json ------------------------------------------------------------------------------
def _b64(v: Any) -> bool:
    if not isinstance(v, str) or len(v) > MAX_B64 or not v.isascii():
        return False
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _path_text(v: Any) -> bool:
    return isinstance(v, str) and "\x00" not in v and len(v) <= 4096


def clean_settings_values(values: Any) -> tuple[dict[str, Any], list[str]]:
    """Saved setting values checked against the schema: wrong types and unknown names dropped,
    numbers out of range clamped into it; a note for each."""
    from desklm.engine.settings import SCHEMA
    from desklm.errors import DeskLMError

    if not isinstance(values, dict):
        return {}, [f"saved settings are {type(values).__name__}, not an object: ignored"]
    out: dict[str, Any] = {}
    notes = []
    for name, v in values.items():
        s = SCHEMA.get(name)
        if s is None:
            notes.append(f"unknown setting {str(name)[:40]!r} ignored")
            continue
        try:
            out[name] = s.validate(v)
            continue
        except DeskLMError as e:
            reason = str(e)
        try:  # the right type but out of range: clamp into the range
            parsed = s.parse(v)
        except DeskLMError:
            parsed = None
        if (
            s.kind in ("int", "float")
            and isinstance(parsed, int | float)
            and not isinstance(parsed, bool)
            and math.isfinite(parsed)
        ):
            lo = s.minimum if s.minimum is not None else parsed
            hi = s.maximum if s.maximum is not None else parsed
            clamped = type(parsed)(min(max(parsed, lo), hi))
            try:
                out[name] = s.validate(clamped)
                notes.append(f"{name} {parsed} is out of range; using {out[name]}")
                continue
            except DeskLMError:
                pass
        notes.append(f"ignored: {reason[:200]}")
    return out, notes


def _clean_tuned(v: Any) -> tuple[dict[str, Any], int]:
    if not isinstance(v, dict):
        return {}, 1
    out, bad = {}, 0
    for key, t in v.items():
        ok = isinstance(t, dict) and all(
            isinstance(t.get(k), int) and not isinstance(t.get(k), bool) and t[k] >= lo
            for k, lo in (("n_threads", 1), ("n_threads_batch", 1), ("n_gpu_layers", -1))
        )
        if ok:
            out[key] = _scalars(t)
        else:
            bad += 1
    return out, bad


def clean_app_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """settings.json's object with every key DeskLM knows checked; keys it does not know are
    kept as they are (a newer version or another part may own them)."""
    out = dict(data)
    notes: list[str] = []
    if "settings" in out:
        out["settings"], more = clean_settings_values(out["settings"])
        notes += more
    if "last_model" in out and not _path_text(out["last_model"]):
        notes.append("the last model's path is not a file name: ignored")
        out["last_model"] = ""
    for key in ("geometry", "window_state"):
        if key in out and not _b64(out[key]):
            notes.append(f"the saved window {key.replace('_', ' ')} is not valid: ignored")
            del out[key]
    if "recent_models" in out:
        rm = out["recent_models"]
        good = [r for r in rm if _path_text(r)] if isinstance(rm, list) else []
        if not isinstance(rm, list) or len(good) != len(rm):
            notes.append("dropped entries of the recent models list that are not file names")
        out["recent_models"] = good
    if "tuned" in out:
        out["tuned"], bad = _clean_tuned(out["tuned"])
        if bad:
            notes.append(f"dropped {bad} tuning result(s) that are not valid")
    return out, notes
