"""Quit signals: handled like a quit, except one the process was told to ignore."""

from __future__ import annotations

import os
import signal

from desklm.engine.signals import install_quit_handlers


def test_a_quit_signal_calls_on_quit_and_an_ignored_one_stays_ignored():
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    old_term = signal.getsignal(signal.SIGTERM)
    got: list[int] = []
    restore = install_quit_handlers(got.append, (signal.SIGTERM, signal.SIGHUP))
    try:
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
        os.kill(os.getpid(), signal.SIGTERM)
        assert got == [signal.SIGTERM]
    finally:
        restore()
        signal.signal(signal.SIGHUP, old_hup)
    assert signal.getsignal(signal.SIGTERM) == old_term
