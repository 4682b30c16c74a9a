"""The Runtime wires the runner, the local engine and the session once: cancelling reaches
whichever backend is in use, switching backends goes through the session, and a turn whose
observer fails leaves nothing behind (real llama.cpp on the embedded model)."""

from __future__ import annotations

import threading

import pytest

from desklm.engine import ChatEngine, Runtime
from desklm.engine.backends.base import FinishReason
from desklm.errors import DeskLMError
from tests.conftest import small_settings


@pytest.fixture
def rt(model_path):
    r = Runtime(small_settings(max_tokens=8), model_path=model_path)
    yield r
    r.close(timeout=10)


def test_one_runtime_owns_one_thread_one_engine_and_one_session(rt, model_path):
    assert isinstance(rt.local, ChatEngine) and rt.backend is rt.local and not rt.remote
    assert rt.served_engine() is None  # nothing loaded: nothing to lend to the API
    info = rt.runner.call(lambda: rt.session.load(model_path))
    assert info.n_ctx > 0 and rt.served_engine() is rt.local
    # a change the session makes reaches the snapshot other threads read, replaced whole
    before = rt.settings_snapshot()
    rt.runner.call(lambda: rt.session.apply_settings({"temperature": 0.5}))
    assert rt.settings_snapshot()["temperature"] == 0.5 and before["temperature"] != 0.5


def test_cancelling_the_running_job_stops_the_reply(rt, model_path):
    rt.runner.call(lambda: rt.session.load(model_path))
    rt.runner.call(lambda: rt.session.apply_settings({"max_tokens": 2000}))
    first = threading.Event()
    job = rt.runner.submit(
        lambda _job: rt.session.send("Count from one to a thousand.", lambda _t: first.set()),
        "turn",
    )
    assert first.wait(120)
    job.cancel()
    result = job.result(timeout=120)
    assert result.stats.finish_reason is FinishReason.CANCELLED
    assert result.stats.completion_tokens < 2000


def test_a_failing_turn_observer_leaves_no_unsent_message(rt, model_path):
    """The bug the Runtime fixed in the window: ``on_start`` raised (it read the local engine
    while a server was in use) after the user's message was committed, and the message stayed
    in the chat although nothing was sent."""
    rt.runner.call(lambda: rt.session.load(model_path))

    def observer(_plan, _reused):
        raise DeskLMError("no model is loaded")

    with pytest.raises(DeskLMError):
        rt.runner.call(lambda: rt.session.send("Hello?", on_start=observer))
    assert rt.session.conversation.messages == []


def test_back_from_a_server_goes_through_the_session(rt, model_path, llama_server):
    from desklm.engine import RemoteBackend

    rt.runner.call(lambda: rt.session.load(model_path))
    remote = RemoteBackend()
    remote.connect(llama_server.url, None, str(model_path), rt.session.settings)
    rt.runner.call(lambda: rt.use_remote(remote, model_path))
    assert rt.remote and rt.backend is remote and rt.served_engine() is None
    rt.runner.call(rt.use_local)
    assert not rt.remote and rt.backend is rt.local and rt.served_engine() is rt.local


def _context_cells(rt) -> int:
    import llama_cpp

    return int(llama_cpp.llama_n_ctx(rt.local.llm._ctx.ctx))


def test_the_api_slots_are_made_only_once_an_api_listens(rt, model_path):
    """``parallel`` 4 (the default) with no API: the model holds the chat's context alone (the
    slots' KV cache would be memory nobody uses). Starting the API reloads once to make them,
    the chat kept; a port in use reloads nothing; stopping keeps them until the next load."""
    import openai

    from desklm.engine.backends.local import kvcache
    from desklm.server import ApiServer

    assert rt.session.settings["parallel"] == 4
    rt.runner.call(lambda: rt.session.load(model_path))
    n_ctx = rt.session.settings["n_ctx"]
    assert rt.local.n_slots == 0 and _context_cells(rt) == n_ctx
    rt.runner.call(lambda: rt.session.send("Hello there."))
    said = [m.content for m in rt.session.conversation.messages]
    assert len(said) == 2
    alone = kvcache.fingerprint(rt.local)

    server = ApiServer.for_runtime(rt)
    url = server.start(port=0)
    try:
        assert rt.local.n_slots == 4 and _context_cells(rt) == 5 * n_ctx
        assert "reloaded with 4 API slots" in server.note and "MB of KV cache" in server.note
        assert [m.content for m in rt.session.conversation.messages] == said
        # a chat's KV snapshot from the context alone is not restored into this layout
        assert kvcache.fingerprint(rt.local) != alone
        taken = ApiServer.for_runtime(rt)  # the same port: refused before anything reloads
        llm = rt.local.llm
        with pytest.raises(DeskLMError, match="in use"):
            taken.start(port=server.port)
        assert rt.local.llm is llm and rt.local.api_slots
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        reply = client.completions.create(model="m", prompt="One, two,", max_tokens=4)
        assert reply.choices[0].text and server.state.slots == 4
    finally:
        server.stop()
    assert rt.local.n_slots == 4 and not rt.local.api_slots  # kept: no reload to stop
    assert server.start(port=0) and server.note == ""  # made already: nothing reloads
    server.stop()
    rt.runner.call(lambda: rt.session.load(model_path))  # the next load, API off: none
    assert rt.local.n_slots == 0 and _context_cells(rt) == n_ctx
    assert kvcache.fingerprint(rt.local) == alone


def test_changing_parallel_with_no_api_reloads_nothing_and_the_api_makes_the_new_number(
    rt, model_path
):
    """With no API and no slots made, ``parallel`` changes nothing the model holds: applying
    it keeps the model (no reload, the chat's KV untouched) and says when it takes effect; the
    API turned on then makes the new number of slots. With slots made (the API was on), a
    change reloads as any load setting does."""
    from desklm.server import ApiServer

    rt.runner.call(lambda: rt.session.load(model_path))
    llm = rt.local.llm
    assert rt.session.reloads({"parallel": 2}) is False
    assert rt.session.reloads({"parallel": 2, "n_ctx": 1024}) is True
    res = rt.runner.call(lambda: rt.session.apply_settings({"parallel": 2}))
    assert not res.reloaded and rt.local.llm is llm and rt.local.n_slots == 0
    assert "made when the API is turned on" in res.message
    assert rt.session.settings["parallel"] == 2
    server = ApiServer.for_runtime(rt)
    server.start(port=0)
    try:
        assert rt.local.n_slots == 2 and "reloaded with 2 API slots" in server.note
        assert rt.session.reloads({"parallel": 3}) is True  # the API asks for slots now
    finally:
        server.stop()
    assert rt.session.reloads({"parallel": 3}) is True  # off, but 2 slots are still made
    res = rt.runner.call(lambda: rt.session.apply_settings({"parallel": 3}))
    assert res.reloaded and rt.local.n_slots == 0  # the reload, API off, made none
