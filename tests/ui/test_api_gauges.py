"""API work shows in the window's gauges: an `openai` client against the window's server."""

from __future__ import annotations

import openai

from tests.ui.conftest import LOAD_TIMEOUT_MS, REPLY_TIMEOUT_MS, send_and_wait, switch_api


def test_an_api_request_is_counted_in_the_gauges(window, qtbot):
    panel = window.server_panel
    panel.port.setValue(0)  # any free port on 127.0.0.1
    switch_api(qtbot, panel, True)  # a reload: the slots
    client = openai.OpenAI(
        base_url=window.controller.api_server.url, api_key="unused", max_retries=0
    )
    with qtbot.waitSignal(panel.requestLogged, timeout=REPLY_TIMEOUT_MS) as logged:
        r = client.chat.completions.create(
            model="any",
            max_tokens=8,
            temperature=0,
            messages=[{"role": "user", "content": "Say hello."}],
        )
    rec = logged.args[0]
    assert rec.status == 200 and rec.completion_tokens == r.usage.completion_tokens
    g = window.gauges
    assert g.tps.detail == "API request" and g.tps.value_text == f"{rec.tokens_per_s:.1f}"
    assert g.ttft.detail == "API request" and rec.ttft_s is not None
    used = r.usage.prompt_tokens + r.usage.completion_tokens
    assert g.ctx.value_text.startswith(f"{used:,} / ") and g.ctx.detail.startswith("API")
    switch_api(qtbot, panel, False)


def test_the_status_bar_follows_the_slots_while_four_streams_run(window, qtbot):
    """The state sent when the fourth request arrived said "1 of 4 at once, 3 queued"; the
    batch took all four a step later, and the status bar must say so (it kept the stale line
    for the whole burst)."""
    import threading

    panel = window.server_panel
    panel.port.setValue(0)
    switch_api(qtbot, panel, True)  # a reload: the slots
    url = window.controller.api_server.url
    done: list[int] = []

    def stream(i: int) -> None:
        c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        n = 0
        for ch in c.completions.create(
            model="m", prompt=f"{i}, {i + 1}, {i + 2},", max_tokens=200, temperature=0, stream=True
        ):
            n += bool(ch.choices and ch.choices[0].text)
        done.append(n)

    ts = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(4)]
    for t in ts:
        t.start()
    bar = window.statusline.server_state
    qtbot.waitUntil(lambda: "answering 4 of 4 at once" in bar.text(), timeout=REPLY_TIMEOUT_MS)
    assert "queued" not in bar.text()
    # a reply in the window meanwhile: its speed is a share of the model's, and says so
    r = send_and_wait(qtbot, window, "Hello?")
    assert r.stats.shared_with >= 1 and len(done) < 4
    others = f"shared with {r.stats.shared_with} other request"
    assert window.gauges.tps.sub.startswith(f"generation speed, {others}")
    qtbot.waitUntil(lambda: len(done) == 4, timeout=REPLY_TIMEOUT_MS)
    qtbot.waitUntil(lambda: "answering" not in bar.text(), timeout=10_000)
    assert bar.text() == f"API: listening on {url}"
    switch_api(qtbot, panel, False)


def test_turning_the_api_on_makes_its_slots_and_says_so_once(window, qtbot):
    """With the API off the model holds the chat's context alone and the memory estimate
    counts no slots; turning it on reloads once for the 4 slots, one notice says so and the
    estimate counts them; off and on again reloads nothing and adds no notice."""
    sp, panel, eng = window.settings_panel, window.server_panel, window.controller.runtime.local
    assert eng.n_slots == 0 and sp.fit is not None
    kv_alone = sp.fit.kv_ram + sp.fit.kv_vram
    panel.port.setValue(0)
    with qtbot.waitSignal(panel.noted, timeout=LOAD_TIMEOUT_MS) as noted:
        panel.toggle.click()
    assert "reloaded with 4 API slots" in noted.args[0] and eng.n_slots == 4
    qtbot.waitUntil(lambda: sp.fit.kv_ram + sp.fit.kv_vram == 5 * kv_alone, timeout=5_000)
    assert [t for t in window.notices.texts() if "API slots" in t] == [noted.args[0] + "."]
    assert window.notices.texts().count(noted.args[0] + ".") == 1
    switch_api(qtbot, panel, False)
    qtbot.waitUntil(lambda: sp.fit.kv_ram + sp.fit.kv_vram == kv_alone, timeout=5_000)  # off
    llm = eng.llm
    switch_api(qtbot, panel, True)
    assert eng.llm is llm and window.controller.api_server.note == ""
    assert len([t for t in window.notices.texts() if "API slots" in t]) == 1
    switch_api(qtbot, panel, False)


def test_a_pending_parallel_says_no_reload_until_the_api_has_slots(window, qtbot):
    """With no API slots made, ``parallel`` alone reloads nothing: the Model group says so
    (not "reload needed"), and Apply keeps the model; once the API has made its slots, the
    same change is a reload and the panel says that."""
    sp, panel, eng = window.settings_panel, window.server_panel, window.controller.runtime.local
    box, mark = sp.groups["reload"], sp.marks["parallel"]
    assert eng.n_slots == 0 and box.title() == "Model"
    sp._edited("parallel", 2)
    assert sp.pending == {"parallel": 2} and sp.reload_marked("parallel")
    assert box.title() == "Model — press Apply (no reload)" and "no reload now" in mark.toolTip()
    assert sp.apply_button.text() == "Apply"
    n_ctx = int(sp.settings["n_ctx"])
    sp._edited("n_ctx", n_ctx // 2)  # a load setting beside it: applying both reloads
    assert box.title() == "Model — reload needed" and mark.toolTip().startswith("reload needed")
    assert sp.apply_button.text() == "Apply && reload"  # && is the button's literal &
    sp._edited("n_ctx", n_ctx)
    assert sp.pending == {"parallel": 2} and "no reload" in box.title()
    llm = eng.llm
    with qtbot.waitSignal(window.controller.settingsLoaded, timeout=LOAD_TIMEOUT_MS):
        sp.apply_button.click()
    assert eng.llm is llm and not sp.pending and box.title() == "Model"
    panel.port.setValue(0)
    switch_api(qtbot, panel, True)  # the slots: 2 now
    assert eng.n_slots == 2
    sp._edited("parallel", 3)
    assert box.title() == "Model — reload needed"
    switch_api(qtbot, panel, False)  # the slots stay made: still a reload
    assert box.title() == "Model — reload needed" and "reload needed" in mark.toolTip()
    sp._edited("parallel", 2)
    assert box.title() == "Model"
