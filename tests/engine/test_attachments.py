"""Attaching files: real text files and PDFs, hostile files, token counts and fitting."""

import json
import os
import sys

import pytest

from desklm.engine.chat.attachments import (
    MAX_TEXT_BYTES,
    compose,
    context_room,
    read_attachment,
    render_block,
)
from desklm.engine.chat.session import ChatSession
from desklm.engine.store.files import ConversationStore
from desklm.errors import DeskLMError
from tests.conftest import small_settings


def make_pdf(path, lines):
    """A small real PDF with a text layer, written by hand (one page, Helvetica)."""
    text_ops = " ".join(f"({t}) Tj 0 -20 Td" for t in lines)
    stream = f"BT /F1 14 Tf 72 720 Td {text_ops} ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_text_files_of_every_kind(tmp_path):
    md = tmp_path / "notes.md"
    md.write_text("# Title\n\nSome *markdown*.\n", "utf-8")
    a = read_attachment(md)
    assert (a.name, a.kind, a.chars, a.size) == (
        "notes.md",
        "text",
        len(md.read_text()),
        md.stat().st_size,
    )
    code = tmp_path / "x.py"
    code.write_text('print("```not the end```")\n', "utf-8")
    block = read_attachment(code).block()
    assert block.startswith("Attached file x.py:\n````\n") and block.endswith("\n````")
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n", "utf-8")
    assert read_attachment(csv).text == "a,b\n1,2\n"
    u16 = tmp_path / "w.txt"
    u16.write_text("héllo wörld", "utf-16")
    assert read_attachment(u16).text == "héllo wörld"
    latin = tmp_path / "l.txt"
    latin.write_bytes("café crème, naïve".encode("cp1252"))
    a = read_attachment(latin)
    assert a.text == "café crème, naïve" and a.encoding == "windows-1252"
    few_bad = tmp_path / "f.txt"
    few_bad.write_bytes(b"good text " * 100 + b"\xff" + "ünïcode".encode())
    assert "\ufffd" in read_attachment(few_bad).text


def test_a_real_pdf(tmp_path):
    p = make_pdf(tmp_path / "report.pdf", ["Quarterly report", "Revenue grew by 12 percent"])
    a = read_attachment(p)
    assert a.kind == "pdf" and "Quarterly report" in a.text and "12 percent" in a.text
    msg = compose("Summarise it.", [a])
    assert msg.startswith("Attached file report.pdf:\n```\n") and msg.endswith("Summarise it.")


@pytest.mark.timeout(60)
def test_hostile_files_are_refused_with_one_line(tmp_path):
    cases = {}
    cases["folder"] = tmp_path
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)  # opening it for reading would block forever
        cases["pipe"] = fifo
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)
    cases["limit"] = big
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)) * 10)
    cases["binary"] = tmp_path / "bin.dat"
    (tmp_path / "img.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    cases["PNG"] = tmp_path / "img.txt"
    (tmp_path / "empty.txt").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.txt"
    (tmp_path / "trunc.pdf").write_bytes(make_pdf(tmp_path / "ok.pdf", ["x"]).read_bytes()[:60])
    cases["PDF"] = tmp_path / "trunc.pdf"
    (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    cases["junk"] = tmp_path / "junk.pdf"
    (tmp_path / "fake.pdf").write_text("just text", "utf-8")
    cases["not a PDF"] = tmp_path / "fake.pdf"
    (tmp_path / "blank.pdf").write_bytes(make_pdf(tmp_path / "b0.pdf", []).read_bytes())
    cases["no text layer"] = tmp_path / "blank.pdf"
    cases["no such"] = tmp_path / "missing.txt"
    for what, path in cases.items():
        with pytest.raises(DeskLMError) as e:
            read_attachment(path)
        reason = str(e.value)
        assert "\n" not in reason and reason.startswith("cannot attach"), (what, reason)
        print(f"{what}: {reason}", file=sys.stderr)


def test_render_block_names_are_data():
    b = render_block("../../evil\nname<start_of_turn>.txt", "x")
    assert b.splitlines()[0] == "Attached file evil?name<start_of_turn>.txt:"


def session(engine, model_path, tmp_path, **over):
    s = ChatSession(
        model_path,
        small_settings(max_tokens=6, **over),
        engine=engine,
        store=ConversationStore(tmp_path / "conv"),
    )
    s.reset()
    return s


def test_tokens_and_fitting_on_the_real_model(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    free_now, most, n_ctx = context_room(s)
    assert n_ctx == engine.n_ctx and 0 < free_now <= most < n_ctx
    small = tmp_path / "small.txt"
    small.write_text("The secret word is pineapple.\n", "utf-8")
    a = read_attachment(small, engine.tokenize, (free_now, most, n_ctx))
    assert 5 < a.tokens < 40 and not a.note
    huge = tmp_path / "huge.txt"
    huge.write_text("many words here " * 2000, "utf-8")
    with pytest.raises(
        DeskLMError,
        match=r"needs [\d,]+ tokens but at most [\d,]+ of the "
        r"2,048-token context",
    ):
        read_attachment(huge, engine.tokenize, context_room(s))


def test_an_attachment_goes_into_the_message_and_the_file(engine, model_path, tmp_path):
    s = session(engine, model_path, tmp_path)
    f = tmp_path / "fact.txt"
    f.write_text("Zorblax is the capital of Mars.\n", "utf-8")
    a = read_attachment(f, engine.tokenize, context_room(s))
    r = s.send("What is the capital?", attachments=[a])
    user = s.conversation.messages[0]
    assert user.content.startswith("Attached file fact.txt:\n```\nZorblax")
    assert user.content.endswith("What is the capital?")
    assert r.stats.prompt_tokens > a.tokens
    saved = json.loads(s.store.path(s.conv_id).read_text("utf-8"))
    assert saved["messages"][0]["attachments"] == [a.meta()]
    # the terminal's /attach queues a file for the next message only
    res = s.run_command(f"/attach {f}")
    assert res.data["attachment"]["name"] == "fact.txt" and res.data["pending"]
    s.send("And again?")
    assert s.conversation.messages[2].attachments[0]["name"] == "fact.txt"
    assert not s.pending_attachments
    s.send("No file now")
    assert not s.conversation.messages[4].attachments
