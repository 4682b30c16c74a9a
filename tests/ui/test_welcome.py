"""The first-run welcome against the local Hugging Face stand-in: recommend, download with
progress and sha256, cancel, and the offline case."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from desklm.engine.models import hub
from desklm.engine.models.curated import GB, CatalogModel
from desklm.engine.monitor import NA
from desklm.ui.welcome import WelcomeWidget
from tests.conftest import REPO

TINY = CatalogModel("Tiny test model", REPO, "tiny.gguf", 6 * 2**20, 0.01, 1024, "MIT")
GEMMA = CatalogModel("Gemma test", REPO, "gemma.gguf", 253_113_024, 0.27, 1024, "Gemma")


@pytest.fixture
def make(qtbot):
    made = []

    def build(**kw):
        w = WelcomeWidget(free=kw.pop("free", (16 * GB, NA)), cores=kw.pop("cores", 8), **kw)
        qtbot.addWidget(w)
        w.resize(900, 600)
        made.append(w)
        return w

    yield build
    for w in made:
        w.shutdown()


def test_it_explains_and_recommends_a_model_for_this_machine(make):
    w = make()
    text = w.model_label.text()
    assert w.rec.model.name in text and "GB" in text and w.rec.model.licence in text
    assert "Fits" in w.fit_label.text()
    small = make(free=(16 * GB, NA), cores=2)
    assert small.rec.model.params_b <= 1.6


def test_offline_it_says_so_and_keeps_the_embedded_model(make):
    assert hub.offline()  # the test session is offline by default
    w = make()
    assert not w.download_button.isEnabled()
    assert "needs an internet connection" in w.status.text()
    assert "embedded model" in w.status.text()


def test_download_and_use(make, qtbot, server):
    w = make(model=TINY)
    assert server.hub.requests == []  # nothing sent before the button
    with qtbot.waitSignal(w.useModel, timeout=60000) as b:
        w.download_button.click()
    path = Path(b.args[0])
    assert path.is_file() and hub.sha256_of(path) == server.hub.sha(
        server.hub.files[REPO]["tiny.gguf"]
    )
    assert w.progress.value() == 1000 and "verified" in w.status.text()


def test_cancel_a_download(make, qtbot, server):
    server.hub.chunk_delay = 0.05  # a slow link: the 250 MB file takes ~13 s
    w = make(model=GEMMA)
    w.download_button.click()
    qtbot.waitUntil(lambda: w.progress.value() > 0, timeout=60000)
    assert not w.cancel_button.isHidden() and w.cancel_button.isEnabled()
    w.cancel_button.click()
    qtbot.waitUntil(lambda: w.last_error == "download cancelled", timeout=60000)
    assert "cancelled" in w.status.text() and w.download_button.isEnabled()


def test_unreachable_fails_fast_with_the_reason(make, qtbot, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    w = make(model=TINY)
    t0 = time.monotonic()
    w.download_button.click()
    qtbot.waitUntil(lambda: w.last_error != "", timeout=15000)
    assert time.monotonic() - t0 < 8
    assert "cannot reach Hugging Face" in w.status.text()
    assert "embedded model" in w.status.text()


def test_dismiss(make, qtbot):
    w = make()
    w.show()
    with qtbot.waitSignal(w.dismissed, timeout=1000):
        w.dismiss_button.click()
    assert not w.isVisible()


def test_a_short_narrow_window_scrolls_the_card_instead_of_overlapping_its_lines(make, qtbot):
    w = make()
    w.resize(430, 260)  # the chat column of a 1024x640 screen, under a 260 px high welcome
    w.show()
    qtbot.waitExposed(w)
    card = w.model_label.parentWidget()

    def laid_out_apart() -> None:
        labels = sorted(
            (
                lab
                for lab in card.findChildren(type(w.model_label))
                if lab.isVisible() and lab.text()
            ),
            key=lambda lab: lab.y(),
        )
        for upper, lower in itertools.pairwise(labels):
            assert upper.geometry().bottom() < lower.geometry().top()
            assert upper.height() >= upper.heightForWidth(upper.width()) - 1  # not squeezed

    qtbot.waitUntil(laid_out_apart, timeout=2000)  # once the layout has settled
    assert w.scroll_area.verticalScrollBar().isVisible()  # the rest is a scroll away
    assert not w.scroll_area.horizontalScrollBar().isVisible()  # and never sideways
