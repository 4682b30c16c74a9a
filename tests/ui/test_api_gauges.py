"""API work shows in the window's gauges: an `openai` client against the window's server."""

from __future__ import annotations

import openai

from tests.ui.conftest import REPLY_TIMEOUT_MS


def test_an_api_request_is_counted_in_the_gauges(window, qtbot):
    panel = window.server_panel
    panel.port.setValue(0)  # any free port on 127.0.0.1
    with qtbot.waitSignal(panel.stateChanged, timeout=10_000):
        panel.toggle.click()
    qtbot.waitUntil(lambda: window.controller.api_server.running, timeout=10_000)
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
    panel.toggle.click()
