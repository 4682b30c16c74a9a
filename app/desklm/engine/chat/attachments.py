"""Attaching a text file to a message: reading it safely, counting it, fitting it.

What can be attached: any file whose content is text (``.txt``, ``.md``, source code, ``.csv``,
config files ... UTF-8, UTF-16 with a BOM, or Windows-1252), and the text of a PDF (via
``pypdf``). Everything else (images, archives, office files, folders, pipes, devices, files too
big, PDFs without a text layer) is refused with a one-line reason, never a crash: the file is
checked to be a regular file before it is read (a FIFO would block), at most the size limit is
read, and any failure of the PDF reader is caught.

How an attachment reaches the model: as plain text in the user message, before what the user
typed, in a fenced block with the file name::

    Attached file notes.md:
    ````
    ...the file's text...
    ````

The fence is longer than any run of backticks inside the file, so the file cannot end it. The
text is data like anything the user types (the chat format escapes nothing out of it; it is
never a template or a control token). The message's ``content`` holds that whole text (so the
prompt, search and export see exactly what the model saw), and its ``attachments`` list records
``{name, chars, tokens, size}`` of each file for display (the window's chip).
"""

from __future__ import annotations

import codecs
import io
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from desklm.errors import DeskLMError

MAX_TEXT_BYTES = 8 * 2**20  # a text file bigger than this is refused
MAX_PDF_BYTES = 64 * 2**20
MAX_CHARS = 2_000_000  # extracted text longer than this is refused
MAX_PDF_PAGES = 2000
HEADER = "Attached file {name}:"
_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive (or an Office file)",
    b"\x7fELF": "a program",
    b"MZ": "a Windows program",
    b"\x1f\x8b": "a gzip archive",
    b"GGUF": "a model file",
}


@dataclass
class Attachment:
    name: str  # the file's name (no folders)
    text: str  # the text the model reads
    size: int  # bytes on disk
    kind: str = "text"  # "text" or "pdf"
    tokens: int | None = None  # tokens of the whole block, for the loaded model
    encoding: str = "utf-8"
    note: str = ""  # e.g. "older messages will be dropped to make room"

    @property
    def chars(self) -> int:
        return len(self.text)

    def block(self) -> str:
        """The attachment as it appears in the message."""
        return render_block(self.name, self.text)

    def meta(self) -> dict[str, Any]:
        """What the message stores about the attachment (its text is in the content)."""
        d: dict[str, Any] = {"name": self.name, "chars": self.chars, "size": self.size}
        if self.tokens is not None:
            d["tokens"] = self.tokens
        return d

    def chip(self) -> dict[str, Any]:
        """A queued file as the window's chip shows it: name, size, tokens and any fit note."""
        return {**self.meta(), "note": self.note}

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta(), "kind": self.kind, "encoding": self.encoding, "note": self.note}


def clean_name(name: str) -> str:
    one = "".join(c if c.isprintable() else "?" for c in Path(name).name)
    return one[:200] or "file"


def render_block(name: str, text: str) -> str:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{HEADER.format(name=clean_name(name))}\n{fence}\n{text.rstrip()}\n{fence}"


def compose(text: str, attachments: Sequence[Attachment]) -> str:
    """The message content: each attachment's block, then what the user typed."""
    parts = [a.block() for a in attachments]
    if text.strip():
        parts.append(text)
    return "\n\n".join(parts)


def typed_text(content: str) -> str:
    """What the user typed in a message built by :func:`compose`: the content without the
    attachment blocks at its start (a chat's title and the transcript show this)."""
    rest = content
    while rest.startswith(HEADER.split("{", 1)[0]):
        lines = rest.split("\n")
        if len(lines) < 3 or not lines[1].startswith("```") or lines[1].strip("`"):
            break
        fence = lines[1]
        end = next((i for i in range(2, len(lines)) if lines[i] == fence), None)
        if end is None:
            break
        rest = "\n".join(lines[end + 1 :]).lstrip("\n")
    return rest


# --- reading -----------------------------------------------------------------------------------
def _open_regular(path: Path, limit: int) -> tuple[bytes, int]:
    """The file's bytes (at most ``limit``) and its size; refuses anything not a regular file
    without blocking on it (a FIFO or a device is never read)."""
    name = clean_name(str(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DeskLMError(f"cannot attach {name}: no such file") from None
    except OSError as e:
        raise DeskLMError(f"cannot attach {name}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DeskLMError(f"cannot attach {name}: it is a folder; attach the files in it")
    if not stat.S_ISREG(st.st_mode):
        raise DeskLMError(f"cannot attach {name}: not a regular file (a pipe, socket or device)")
    if st.st_size > limit:
        raise DeskLMError(
            f"cannot attach {name}: {st.st_size / 2**20:,.2f} MB is more than "
            f"the {limit / 2**20:,.0f} MB limit"
        )
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise DeskLMError(f"cannot attach {name}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else meanwhile
            raise DeskLMError(f"cannot attach {name}: not a regular file")
        chunks, got = [], 0
        while got <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - got))
            if not b:
                break
            chunks.append(b)
            got += len(b)
    except OSError as e:
        raise DeskLMError(f"cannot attach {name}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise DeskLMError(f"cannot attach {name}: more than the {limit / 2**20:,.0f} MB limit")
    return data, st.st_size


def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """(text, encoding) of a text file's bytes; DeskLMError when they are not text."""
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise DeskLMError(f"cannot attach {name}: it is {what}, not text")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise DeskLMError(f"cannot attach {name}: damaged UTF-16 text") from None
    if b"\x00" in data[:8192]:
        raise DeskLMError(f"cannot attach {name}: binary data, not text")
    try:
        text, enc = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        loose = data.decode("utf-8", errors="replace")
        if loose.count("\ufffd") <= max(1, len(loose) // 200):  # a few bad bytes: keep it
            text, enc = loose, "utf-8 (some bytes were invalid and replaced)"
        else:
            try:
                text, enc = data.decode("cp1252"), "windows-1252"
            except UnicodeDecodeError:
                raise DeskLMError(f"cannot attach {name}: not text in a known encoding") from None
    bad = sum(1 for c in text[:100_000] if ord(c) < 32 and c not in "\t\n\r\f\v\x1b")
    if bad > max(2, len(text[:100_000]) // 100):
        raise DeskLMError(f"cannot attach {name}: binary data, not text")
    return text.replace("\x00", ""), enc


def pdf_text(data: bytes, name: str) -> str:
    """The text layer of a PDF; DeskLMError for a damaged, locked or text-less PDF."""
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # damaged files warn at length
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DeskLMError(f"cannot attach {name}: the PDF is password-protected")
        n = len(reader.pages)
        if n > MAX_PDF_PAGES:
            raise DeskLMError(
                f"cannot attach {name}: {n:,} pages is more than the {MAX_PDF_PAGES:,}-page limit"
            )
        pages, total = [], 0
        for page in reader.pages:
            t = page.extract_text() or ""
            total += len(t)
            if total > MAX_CHARS:
                raise DeskLMError(
                    f"cannot attach {name}: more than {MAX_CHARS:,} characters of text"
                )
            pages.append(t.strip())
    except DeskLMError:
        raise
    except RecursionError:
        raise DeskLMError(f"cannot attach {name}: the PDF is damaged (nested too deeply)") from None
    except Exception as e:  # pypdf raises many kinds on damaged files: all are "damaged"
        raise DeskLMError(
            f"cannot attach {name}: the PDF could not be read ({type(e).__name__})"
        ) from None
    text = "\n\n".join(p for p in pages if p).replace("\x00", "")
    if not text.strip():
        raise DeskLMError(f"cannot attach {name}: the PDF has no text layer (a scanned document?)")
    return text


def read_attachment(
    path: Path | str,
    tokenize: Callable[[str], list[int]] | None = None,
    room: tuple[int, int, int] | None = None,
) -> Attachment:
    """Read a file to attach.

    ``tokenize`` (the loaded model's tokenizer) counts the tokens of the attachment's block.
    ``room`` is ``(free now, free at most, n_ctx)`` from :func:`context_room`: the file is
    refused, with the numbers, when it needs more than the most the context can ever give it;
    when it needs more than is free now, ``note`` says older messages will be dropped.
    Raises DeskLMError with a one-line reason for anything that cannot be attached.
    """
    p = Path(path).expanduser()
    name = clean_name(str(p))
    is_pdf = p.suffix.lower() == ".pdf"
    data, size = _open_regular(p, MAX_PDF_BYTES if is_pdf else MAX_TEXT_BYTES)
    if is_pdf or data.startswith(b"%PDF-"):
        if not data.lstrip()[:5] == b"%PDF-":
            raise DeskLMError(f"cannot attach {name}: it is named .pdf but is not a PDF")
        att = Attachment(name, pdf_text(data, name), size, kind="pdf", encoding="pdf")
    else:
        text, enc = decode_text(data, name)
        if len(text) > MAX_CHARS:
            raise DeskLMError(
                f"cannot attach {name}: {len(text):,} characters is more than "
                f"the {MAX_CHARS:,} limit"
            )
        if not text.strip():
            raise DeskLMError(f"cannot attach {name}: the file is empty")
        att = Attachment(name, text, size, encoding=enc)
    if tokenize is not None:
        att.tokens = len(tokenize(att.block()))
        if room is not None:
            free_now, most, n_ctx = room
            if att.tokens > most:
                raise DeskLMError(
                    f"cannot attach {name}: it needs {att.tokens:,} tokens but at most "
                    f"{most:,} of the {n_ctx:,}-token context are free for it; raise the "
                    "context length or attach a smaller file"
                )
            if att.tokens > free_now:
                att.note = (
                    f"needs {att.tokens:,} tokens, {free_now:,} free now: older "
                    "messages will be dropped to make room"
                )
    return att


def context_room(session: Any, typed: str = "") -> tuple[int, int, int]:
    """(tokens free now, tokens free at most, n_ctx) for attachments to the next message of a
    ChatSession with a loaded model: *now* with the conversation as it is in the context,
    *at most* once every older turn has been dropped (only the system prompt stays)."""
    from desklm.engine.chat.conversation import Message, reply_reserve

    eng = session.engine
    if eng.template is None:
        raise DeskLMError("no model is loaded")
    conv = session.conversation
    n_ctx = int(eng.n_ctx)
    reserve = reply_reserve(n_ctx, int(session.settings["max_tokens"]))
    probe = Message("user", typed or ".")

    def used(msgs: list[Any]) -> int:
        return len(eng.tokenize(eng.template.render_parts(conv.as_msgs(msgs))))

    now = n_ctx - reserve - used([*conv.in_context(), probe])
    most = n_ctx - reserve - used([probe])
    return max(0, now), max(0, most), n_ctx
