"""Guards against Qt binding bugs that would take a long-running DeskLM down."""

import gc
import sys

from PySide6.QtCore import QObject, Signal


class Emitter(QObject):
    sig = Signal(object)


def test_signal_emit_keeps_refcounts_balanced(qapp):
    # PySide6 6.12.0 returned True from emit() without a reference: after enough emits
    # (the sampler alone emits 7,200 times an hour) Python aborts in bool_dealloc.
    e = Emitter()
    received = []
    e.sig.connect(received.append)
    gc.collect()
    before = sys.getrefcount(True), sys.getrefcount(False)
    for i in range(50):
        e.sig.emit(i)
    gc.collect()
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert len(received) == 50
    assert after[0] >= before[0] - 5 and after[1] >= before[1] - 5, (before, after)
