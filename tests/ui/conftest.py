from __future__ import annotations

import pytest

from tests.conftest import small_settings

LOAD_TIMEOUT_MS = 120_000
REPLY_TIMEOUT_MS = 180_000


@pytest.fixture
def make_window(qtbot, model_path):
    """Build a real MainWindow on the embedded model; every window is shut down afterwards."""
    from desklm.ui.main_window import MainWindow

    made = []

    def make(wait_loaded: bool = True, **over):
        w = MainWindow(small_settings(**over), str(model_path))
        qtbot.addWidget(w)
        # a desktop-sized window (the offscreen screen is 800x600, where the side panels
        # fold away as drawers; tests that want a small window resize it)
        w.resize(1280, 800)
        made.append(w)
        if wait_loaded:
            with qtbot.waitSignal(w.modelLoaded, timeout=LOAD_TIMEOUT_MS):
                w.start()
        else:
            w.start()
        return w

    yield make
    for w in made:
        w.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()


def send_and_wait(qtbot, w, text: str):
    with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS) as blocker:
        w.submit(text)
    return blocker.args[0]


def synced_with(**expected):
    """A settingsSynced check: the sync that shows these values. The window also syncs after a
    load and after each earlier change (emitted from the inference thread, so one can still be
    queued when a test moves the next slider): waiting for "a" sync can catch a stale one."""

    def check(settings) -> bool:
        return all(settings[k] == v for k, v in expected.items())

    return check


def switch_api(qtbot, panel, on: bool) -> None:
    """Click the Server panel's Start (``on``) or Stop and wait until the panel is done, its
    settings saved with the new state. The server can already be listening (or stopped) while
    the panel still finishes: a click then, on the disabled button, does nothing."""
    assert not panel.busy and panel.server.running is not on
    with qtbot.waitSignal(
        panel.settingsChanged,
        timeout=LOAD_TIMEOUT_MS,
        check_params_cb=lambda values: values["enabled"] is on,
    ):
        panel.toggle.click()
    assert not panel.busy and panel.server.running is on
