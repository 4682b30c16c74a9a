"""Versions of a message and the branches of a conversation (regenerate, edit and resend).

The model: a conversation's **active path** is a plain ``list[Message]``; it is what
``Conversation.messages`` holds, what the prompt is rendered from, and what a version-1 reader
sees as ``messages``. A message on the active path may have other **versions** (older replies
kept by regenerate, earlier texts of an edited user message). They hang off the active version:

* ``msg.alternatives``: the other versions, oldest first, each a :class:`Message`;
* ``msg.alt_index``: this version's place among all of them (0-based; the UI shows "2/3");
* ``alt.continuation``: on an inactive version only, the messages that followed it on its
  branch (themselves messages that may have versions of their own).

All versions of one position, in order, are ``alternatives`` with the active message inserted
at ``alt_index`` (:func:`versions`). Switching to version ``j`` swaps what follows: the current
tail becomes the current version's continuation and version ``j``'s continuation becomes the
tail. Nothing is ever lost by switching, regenerating or editing; only :func:`delete` removes.

Stored form (conversation schema 2): ``messages`` is the active path as in schema 1, and a
message with versions carries ``"alternatives": [...]`` (each with its ``"continuation"``) and
``"alt_index"``. A schema-1 file is a valid schema-2 file without versions, so :func:`migrate`
only stamps the version after checking the fields.

Functions here are pure list-and-object operations with no model: the session runs the turns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from desklm.errors import DeskLMError

# desklm.engine.chat.conversation.Message: not imported, since conversation imports this module
# (messages are made with type(msg) of the message at hand)
Message = Any

SCHEMA_VERSION = 3  # 3: an assistant reply's tool calls (desklm.engine.chat.tools)
MAX_DEPTH = 64  # nesting of versions inside continuations kept when reading a file
MAX_VERSIONS = 1000  # versions of one message kept when reading a file


# --- stored form ------------------------------------------------------------------------------
def tree_fields_to_dict(msg: Message) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if msg.alternatives:
        d["alternatives"] = [a.to_dict() for a in msg.alternatives]
        d["alt_index"] = msg.alt_index
    if msg.continuation:
        d["continuation"] = [m.to_dict() for m in msg.continuation]
    return d


def _messages_from(cls: Any, items: Any, depth: int) -> list[Message]:
    out: list[Message] = []
    if not isinstance(items, list) or depth > MAX_DEPTH:
        return out
    for raw in items:
        if (
            not isinstance(raw, dict)
            or raw.get("role") not in ("user", "assistant")
            or not isinstance(raw.get("content"), str)
        ):
            continue
        try:
            out.append(cls.from_dict(raw, depth + 1))
        except (TypeError, ValueError, OverflowError):
            continue
    return out


def clean_attachments(items: Any) -> list[dict[str, Any]]:
    """Attachment records ``{name, chars, tokens}`` with the right types; others dropped."""
    out: list[dict[str, Any]] = []
    if not isinstance(items, list):
        return out
    for a in items[:100]:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            continue
        rec: dict[str, Any] = {"name": a["name"].replace("\x00", "")[:255]}
        for key in ("chars", "tokens", "size"):
            v = a.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53:
                rec[key] = v
        out.append(rec)
    return out


def tree_fields_from_dict(msg: Message, d: dict[str, Any], depth: int = 0) -> None:
    """Fill ``msg``'s versions, continuation and attachments from a stored message ``d``.
    Anything of the wrong type is dropped (a version whose role differs from ``msg``'s too);
    nesting deeper than MAX_DEPTH is cut there."""
    msg.attachments = clean_attachments(d.get("attachments"))
    alts = [
        a for a in _messages_from(type(msg), d.get("alternatives"), depth) if a.role == msg.role
    ]
    alts = alts[:MAX_VERSIONS]
    for a in alts:  # only the active version holds the list
        a.alternatives, a.alt_index = [], 0
    msg.alternatives = alts
    idx = d.get("alt_index", len(alts))
    ok = isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx <= len(alts)
    msg.alt_index = idx if ok else len(alts)
    msg.continuation = _messages_from(type(msg), d.get("continuation"), depth)


def clean_tree_fields(
    raw: dict[str, Any],
    out: dict[str, Any],
    clean_one: Callable[[Any], tuple[dict[str, Any] | None, str]],
    depth: int = 0,
) -> None:
    """For a checker of stored messages (``records.clean_message``): copy ``raw``'s version
    fields and attachments into the cleaned message ``out``, each version checked with
    ``clean_one`` (which should call this function in turn). Wrong types are dropped."""
    if depth > MAX_DEPTH:
        return
    atts = clean_attachments(raw.get("attachments"))
    if atts:
        out["attachments"] = atts
    for key in ("alternatives", "continuation"):
        items = raw.get(key)
        if not isinstance(items, list):
            continue
        kept = []
        for item in items[:MAX_VERSIONS]:
            good, _why = clean_one(item)
            if good is None:
                continue
            if key == "alternatives" and good.get("role") != raw.get("role"):
                continue
            if isinstance(item, dict):
                clean_tree_fields(item, good, clean_one, depth + 1)
            kept.append(good)
        if kept:
            out[key] = kept
    if "alternatives" in out:
        idx = raw.get("alt_index")
        n = len(out["alternatives"])
        ok = isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx <= n
        out["alt_index"] = idx if ok else n


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A conversation record of any older schema as the current one, losing nothing.

    Schema 1 had no versions: its ``messages`` list is the active path of a schema-2 record
    with no alternatives. Schema 2 had no tool calls: a schema-2 record is a schema-3 record
    whose replies made none. So the record is kept as is, messages that carry fields they
    could not have had in their schema keep them (they are checked on load), and the version
    is stamped. Returns a new dict; ``data`` is not modified.
    """
    rec = dict(data)
    version = rec.get("schema")
    if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
        if version < 2:
            rec.setdefault("context_start", 0)
        rec["schema"] = SCHEMA_VERSION
    return rec


# --- versions --------------------------------------------------------------------------------
def versions(msg: Message) -> list[Message]:
    """All versions of the active message ``msg``, oldest first (``msg`` among them)."""
    out = list(msg.alternatives)
    out.insert(min(max(msg.alt_index, 0), len(out)), msg)
    return out


def version_label(msg: Message) -> str:
    """ "2/3": which version of how many; "" for a message with one version."""
    n = len(msg.alternatives) + 1
    return f"{min(msg.alt_index, n - 1) + 1}/{n}" if n > 1 else ""


def index_of(path: list[Message], message_id: str) -> int:
    for i, m in enumerate(path):
        if m.id == message_id:
            return i
    raise DeskLMError(f"no message '{message_id}' in this conversation")


def _activate(
    path: list[Message], index: int, all_versions: list[Message], j: int
) -> list[Message]:
    new = all_versions[j]
    tail = new.continuation
    new.continuation = []
    new.alternatives = [v for k, v in enumerate(all_versions) if k != j]
    new.alt_index = j
    for v in new.alternatives:
        v.alternatives, v.alt_index = [], 0
    return [*path[:index], new, *tail]


def select(path: list[Message], index: int, j: int) -> list[Message]:
    """The path with version ``j`` (0-based) of the message at ``index`` active; the current
    version keeps what followed it. Raises DeskLMError for a version that does not exist."""
    cur = path[index]
    all_versions = versions(cur)
    if not 0 <= j < len(all_versions):
        raise DeskLMError(
            f"that message has {len(all_versions)} version(s); choose 1 to {len(all_versions)}"
        )
    if all_versions[j] is cur:
        return path
    cur.continuation = list(path[index + 1 :])
    return _activate(path, index, all_versions, j)


def add_version(path: list[Message], index: int, new: Message) -> list[Message]:
    """The path up to ``index`` with ``new`` as the newest (active) version there; the current
    version keeps what followed it. What follows ``new`` is for the caller to append."""
    cur = path[index]
    all_versions = versions(cur)
    cur.continuation = list(path[index + 1 :])
    cur.alternatives, cur.alt_index = [], 0
    new.alternatives = all_versions
    new.alt_index = len(all_versions)
    new.continuation = []
    return [*path[:index], new]


def delete(path: list[Message], index: int) -> list[Message]:
    """The path without the message at ``index``.

    A message with other versions loses only the version shown; the previous version (or the
    next, for the first) becomes active with its own continuation. A message with one version
    is removed; a user message takes its replies with it (everything up to the next user
    message), since a reply without its question misleads the model.
    """
    cur = path[index]
    if cur.alternatives:
        rest = [v for v in versions(cur) if v is not cur]
        j = max(0, cur.alt_index - 1)
        return _activate(path, index, rest, j)
    end = index + 1
    if cur.role == "user":
        while end < len(path) and path[end].role != "user":
            end += 1
    return [*path[:index], *path[end:]]


def _contains(msgs: list[Message], message_id: str) -> bool:
    for m in msgs:
        if m.id == message_id:
            return True
        for a in m.alternatives:
            if a.id == message_id or _contains(a.continuation, message_id):
                return True
    return False


def reveal(path: list[Message], message_id: str) -> tuple[list[Message], int]:
    """The path switched (as few switches as needed) so that ``message_id``, in any branch, is
    on it; and its index there. Raises DeskLMError when no branch holds it."""
    for _ in range(MAX_DEPTH * 4):
        for i, m in enumerate(path):
            if m.id == message_id:
                return path, i
        for i, m in enumerate(path):
            hit = [
                k
                for k, v in enumerate(versions(m))
                if v is not m and (v.id == message_id or _contains(v.continuation, message_id))
            ]
            if hit:
                path = select(path, i, hit[0])
                break
        else:
            break
    raise DeskLMError(f"no message '{message_id}' in this conversation")


def walk(path: list[Message], active: bool = True) -> Iterator[tuple[Message, bool]]:
    """Every message of every branch, with whether it is on the active path."""
    for m in path:
        yield m, active
        for a in m.alternatives:
            yield a, False
            yield from walk(a.continuation, False)


def walk_dicts(
    messages: Any, active: bool = True, depth: int = 0
) -> Iterator[tuple[dict[str, Any], bool]]:
    """:func:`walk` over stored messages (dicts), skipping anything malformed."""
    if not isinstance(messages, list) or depth > MAX_DEPTH:
        return
    for m in messages:
        if not isinstance(m, dict):
            continue
        yield m, active
        alts = m.get("alternatives")
        if isinstance(alts, list):
            for a in alts:
                if isinstance(a, dict):
                    yield a, False
                    yield from walk_dicts(a.get("continuation"), False, depth + 1)
