"""The remote backend against real servers on 127.0.0.1 (llama_cpp.server with the embedded
model, and a tiny real HTTP server for statuses llama_cpp.server cannot produce)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from desklm.engine.backends.base import Backend
from desklm.engine.backends.remote import (
    TOK_TEXT,
    RemoteBackend,
    check_url,
    estimate_tokens,
)
from desklm.engine.chat.session import ChatSession
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError
from tests.remote_fixtures import KEY, free_port, start_llama_server, status_server, stop_server

pytestmark = pytest.mark.timeout(240)
SYS = {"role": "system", "content": "You are a helpful assistant."}


def _settings(**over: object) -> Settings:
    v: dict[str, object] = {"max_tokens": 8, "seed": 3, "temperature": 0.7, "n_ctx": 2048}
    v.update(over)
    return Settings(v)


@pytest.fixture(scope="module")
def backend(llama_server) -> RemoteBackend:
    b = RemoteBackend(read_timeout=60)
    b.connect(llama_server.url, settings=_settings())
    yield b
    b.close()


# --- URL rule (pure) ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url,base",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("localhost:11434/v1/", "http://localhost:11434/v1"),
        ("http://192.168.1.5:8080/v1/chat/completions", "http://192.168.1.5:8080/v1"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("http://[::1]:9000", "http://[::1]:9000/v1"),
        ("http://100.101.102.103:8000", "http://100.101.102.103:8000/v1"),
    ],
)
def test_url_normalised(url: str, base: str) -> None:
    assert check_url(url, resolve=False).base == base


def test_plain_http_needs_a_private_address() -> None:
    assert check_url("http://127.0.0.1:1").notice is None  # loopback: no notice
    assert "private address" in (check_url("http://10.0.0.7:8000").notice or "")
    with pytest.raises(DeskLMError, match=r"refusing plain http to 8\.8\.8\.8.*https"):
        check_url("http://8.8.8.8:8000")
    with pytest.raises(DeskLMError, match="not a valid server URL"):
        check_url("ftp://127.0.0.1/")
    with pytest.raises(DeskLMError, match="not in the URL"):
        check_url("http://user:pw@127.0.0.1:8000")
    assert check_url("https://8.8.8.8/v1").notice is None


def test_estimate_is_rough_but_sane() -> None:
    assert estimate_tokens("hello world, this is forty characters!!") == 10


# --- a real server ---------------------------------------------------------------------------
def test_lists_models_and_satisfies_the_interface(
    backend: RemoteBackend, llama_server, model_path: Path
) -> None:
    assert isinstance(backend, Backend)
    assert [m.id for m in backend.models] == [str(model_path)]
    assert backend.model == str(model_path)
    assert backend.token_source == TOK_TEXT  # llama_cpp.server has /extras/tokenize
    # llama_cpp.server does not report its context: the n_ctx setting is used, and said so
    assert backend.n_ctx == 2048
    assert backend.load_info is not None
    assert any("does not report its context" in n for n in backend.load_info.notes)


def test_streams_a_reply_with_stats(backend: RemoteBackend) -> None:
    pieces: list[str] = []
    toks = backend.tokenize(
        backend.template.render(  # type: ignore[union-attr]
            [SYS, {"role": "user", "content": "Say hello"}]
        )
    )
    assert len(toks) > 3
    reply, st = backend.generate(toks, _settings(max_tokens=6), pieces.append)
    assert reply == "".join(pieces) and reply.strip()
    assert st.finish_reason in ("length", "stop")
    assert 1 <= st.completion_tokens <= 6
    assert st.prompt_tokens == len(toks)
    assert st.ttft_s is not None and 0 < st.ttft_s < st.total_s
    assert st.context_used == st.prompt_tokens + st.completion_tokens == backend.context_used
    assert st.token_source.startswith("counted from the stream")  # no usage from this server


def test_session_chats_and_keeps_the_conversation(backend: RemoteBackend) -> None:
    s = ChatSession(Path("unused"), _settings(), engine=backend)
    r1 = s.send("Hello there")
    r2 = s.send("And then?")
    assert r2.stats.prompt_tokens > r1.stats.prompt_tokens  # the whole conversation is sent
    assert [m.role for m in s.conversation.messages] == ["user", "assistant"] * 2
    assert "@ 127.0.0.1" in s.record()["model"]
    assert s.stats_data()["n_ctx"] == 2048


def test_trimming_is_reported_never_silent(backend: RemoteBackend) -> None:
    s = ChatSession(Path("unused"), _settings(n_ctx=512, max_tokens=4), engine=backend)
    backend.load(Path("unused"), s.settings)
    try:
        long = "word " * 200
        s.send(long)
        r = s.send(long)
        r3 = s.send(long)
        dropped = r.stats.trimmed + r3.stats.trimmed
        assert dropped and dropped[0]["role"] == "user"
        assert r3.stats.prompt_tokens + 4 <= 512
    finally:
        backend.load(Path("unused"), _settings())


def test_stop_mid_reply_returns_quickly_and_keeps_the_text(backend: RemoteBackend) -> None:
    got: list[str] = []
    stopped_at: list[float] = []

    def on_text(p: str) -> None:
        got.append(p)
        if len(got) == 2:
            stopped_at.append(time.perf_counter())
            threading.Thread(target=backend.stop).start()

    toks = backend.tokenize(
        backend.template.render(  # type: ignore[union-attr]
            [SYS, {"role": "user", "content": "Write a very long story."}]
        )
    )
    reply, st = backend.generate(toks, _settings(max_tokens=400), on_text)
    assert st.finish_reason == "cancelled", st
    assert time.perf_counter() - stopped_at[0] < 1.0
    assert reply and reply == "".join(got)
    assert "partial reply is kept" in st.note
    # the server saw the disconnect and stopped generating: the next request is served at
    # once (llama_cpp.server runs one request at a time; 400 tokens here take far longer)
    t0 = time.perf_counter()
    _, st2 = backend.generate(toks, _settings(max_tokens=2))
    assert st2.completion_tokens >= 1 and time.perf_counter() - t0 < 8


def test_stop_while_the_server_is_silent() -> None:
    with status_server(hang_s=30) as url:
        b = RemoteBackend(read_timeout=60)
        b.connect(url, settings=_settings())
        threading.Timer(0.5, b.stop).start()
        t0 = time.perf_counter()
        reply, st = b.chat([{"role": "user", "content": "hi"}], _settings())
        assert time.perf_counter() - t0 < 1.6
        assert (reply, st.finish_reason) == ("", "cancelled")
        b.close()


def test_a_slow_server_times_out_with_a_reason() -> None:
    with status_server(hang_s=30) as url:
        b = RemoteBackend(read_timeout=1.0)
        b.connect(url, settings=_settings())
        t0 = time.perf_counter()
        with pytest.raises(DeskLMError, match=r"did not answer within 1 s"):
            b.chat([{"role": "user", "content": "hi"}], _settings())
        assert time.perf_counter() - t0 < 5
        b.close()


@pytest.mark.parametrize(
    "status,pattern",
    [
        (429, r"busy or over its rate limit \(429"),
        (500, r"failed \(HTTP 500\): status 500 from the test server"),
        (503, r"failed \(HTTP 503\)"),
        (404, r"model 'm' not found on the server .*\(404\)"),
    ],
)
def test_http_failures_are_one_line_reasons(status: int, pattern: str) -> None:
    with status_server(status) as url:
        b = RemoteBackend(read_timeout=5)
        b.connect(url, settings=_settings())
        assert b.token_source == "estimate"  # this server offers no tokenizer
        s = ChatSession(Path("unused"), _settings(), engine=b)
        with pytest.raises(DeskLMError, match=pattern) as ei:
            s.send("hi")
        assert "\n" not in str(ei.value)
        assert s.conversation.messages == []  # nothing half-added
        b.close()


def test_wrong_key_and_missing_key(llama_server_keyed) -> None:
    b = RemoteBackend(read_timeout=10)
    with pytest.raises(DeskLMError, match=r"refused the API key \(401"):
        b.connect(llama_server_keyed.url, "wrong-key")
    with pytest.raises(DeskLMError, match=r"needs an API key \(401"):
        b.connect(llama_server_keyed.url)
    ids = b.connect(llama_server_keyed.url, KEY, settings=_settings())
    assert ids and KEY not in repr(b)
    _, st = b.chat([SYS, {"role": "user", "content": "Hi"}], _settings(max_tokens=3))
    assert st.completion_tokens >= 1
    b.close()


def test_missing_model_name(llama_server) -> None:
    b = RemoteBackend(read_timeout=10)
    with pytest.raises(
        DeskLMError,
        match=r"model 'no-such-model' is not served at .*; "
        r"it serves: ",
    ):
        b.connect(llama_server.url, model="no-such-model")


def test_unreachable_port() -> None:
    b = RemoteBackend(connect_timeout=2)
    t0 = time.perf_counter()
    with pytest.raises(
        DeskLMError,
        match=r"cannot reach the server at http://127.0.0.1:\d+: "
        r"connection refused",
    ):
        b.connect(f"http://127.0.0.1:{free_port()}")
    assert time.perf_counter() - t0 < 3


def test_not_an_openai_server() -> None:
    with status_server(404) as url:
        b = RemoteBackend()
        with pytest.raises(DeskLMError, match=r"(no /v1/models)|(not found)"):
            b.connect(url + "/nothing-here")


def test_server_killed_mid_stream(model_path: Path, tmp_path: Path) -> None:
    srv = start_llama_server(model_path, tmp_path / "dying.log")
    try:
        b = RemoteBackend(read_timeout=30)
        b.connect(srv.url, settings=_settings())
        s = ChatSession(Path("unused"), _settings(max_tokens=400), engine=b)
        got: list[str] = []

        def on_text(p: str) -> None:
            got.append(p)
            if len(got) == 2:
                srv.proc.kill()

        t0 = time.perf_counter()
        r = s.send("Write a very long story.", on_text)
        assert time.perf_counter() - t0 < 30
        assert r.stats.finish_reason == "error"
        assert "cut mid-reply" in r.stats.note
        assert r.reply and s.conversation.messages[-1].content == r.reply.strip()
        assert s.conversation.messages[-1].stats["finish_reason"] == "error"
        # the next turn says why in one line, and the conversation stays
        with pytest.raises(DeskLMError, match="cannot reach the server"):
            s.send("Still there?")
        assert len(s.conversation.messages) == 2
    finally:
        stop_server(srv)


def test_a_session_on_a_server_takes_chat_format_and_quits(llama_server) -> None:
    """/set chat_format and quitting go through the Backend interface: a server keeps its own
    template, and closing the session lets go of the connection (both were AttributeErrors)."""
    b = RemoteBackend(read_timeout=60)
    b.connect(llama_server.url, settings=_settings())
    s = ChatSession(Path("unused"), _settings(), engine=b)
    res = s.run_command("/set chat_format chatml")
    assert "chat_format" in res.message
    s.send("Hello")
    s.close()
    assert not b.loaded
