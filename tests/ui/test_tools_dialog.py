"""The window's tools: the permission bar answered each way, the Tools dialog on a real MCP
server (stdio), and a call in the window end to end on the embedded model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from desklm.engine import ToolRequest
from desklm.ui.tool_prompt import ToolPermissionBar
from tests.conftest import small_settings
from tests.tools.conftest import SERVER, stdio_config
from tests.ui.conftest import REPLY_TIMEOUT_MS


def test_the_permission_bar_answers_each_way(qtbot):
    bar = ToolPermissionBar()
    qtbot.addWidget(bar)
    bar.show()
    got: list[tuple[str, str]] = []
    bar.answered.connect(lambda cid, d: got.append((cid, d)))
    for k, args in enumerate(({"city": "Paris"}, {"path": "/tmp/x"}, {"a": 1})):
        bar.ask(ToolRequest("srv", f"tool{k}", args, f"id{k}"))
    assert bar.isVisible() and "“tool0”" in bar.title.text() and "“srv”" in bar.title.text()
    assert json.loads(bar.arguments.toPlainText()) == {"city": "Paris"}
    qtbot.mouseClick(bar.once_button, Qt.MouseButton.LeftButton)
    assert "“tool1”" in bar.title.text() and "/tmp/x" in bar.arguments.toPlainText()
    qtbot.mouseClick(bar.always_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(bar.deny_button, Qt.MouseButton.LeftButton)
    assert got == [("id0", "once"), ("id1", "always"), ("id2", "deny")]
    assert not bar.isVisible()
    bar.ask(ToolRequest("srv", "late", {}, "id3"))
    assert bar.isVisible()
    bar.close_request("id3")  # the turn was stopped while it waited
    assert not bar.isVisible() and got[-1] == ("id2", "deny")


def test_tools_dialog_on_a_real_server(qtbot, data_dir, tmp_path):
    from desklm.ui.controller import ChatController
    from desklm.ui.dialogs.tools_dialog import AddServerDialog, ToolsDialog

    c = ChatController(small_settings())
    try:
        dlg = ToolsDialog(c)
        qtbot.addWidget(dlg)
        dlg.show()
        assert "No tool servers yet" in dlg.status.text()
        form = AddServerDialog(dlg)  # what the Add… form makes of what was typed
        form.name.setText("t")
        form.command.setText(f"{sys.executable} {SERVER} stdio")
        cfg, key = form.server()
        assert (cfg.command, cfg.args, key) == (sys.executable, [str(SERVER), "stdio"], None)
        dlg.add_server(cfg)
        qtbot.waitUntil(lambda: "\nrunning: " in dlg.status.text(), timeout=60_000)
        names = [dlg.tools.item(i).text() for i in range(dlg.tools.count())]
        assert "weather" in names and "add" in names
        assert all(
            dlg.tools.item(i).checkState() == Qt.CheckState.Unchecked
            for i in range(dlg.tools.count())
        )  # nothing is on until checked
        item = dlg.tools.findItems("weather", Qt.MatchFlag.MatchExactly)[0]
        item.setCheckState(Qt.CheckState.Checked)
        path = data_dir / "config" / "mcp.json"
        qtbot.waitUntil(
            lambda: json.loads(path.read_text())["desklm"]["servers"]["t"]["on"] == ["weather"],
            timeout=20_000,
        )
        qtbot.waitUntil(lambda: dlg.force.count() == 2, timeout=10_000)
        dlg.force.setCurrentIndex(1)
        dlg._force_chosen(1)
        assert c.session.force_tool == "weather"
        theirs = tmp_path / "claude_desktop_config.json"
        theirs.write_text(json.dumps({"mcpServers": {"broken": {"command": "/no/such/x"}}}))
        dlg.import_file(str(theirs))
        qtbot.waitUntil(lambda: dlg.servers.count() == 2, timeout=20_000)
        qtbot.waitUntil(
            lambda: "no such program" in dlg.servers.item(0).text() + dlg.servers.item(1).text(),
            timeout=30_000,
        )
        qtbot.waitUntil(
            lambda: any("imported 1 server(s): broken" in n for n in dlg.notices), timeout=10_000
        )
        assert json.loads(theirs.read_text()) == {
            "mcpServers": {"broken": {"command": "/no/such/x"}}
        }
    finally:
        c.shutdown()


def test_a_tool_call_in_the_window(qtbot, make_window, data_dir):
    w = make_window(max_tokens=40, temperature=0.0)
    hub = w.controller.tools
    hub.add(stdio_config())
    hub.start("t")
    hub.set_tool("t", "weather", True)
    w.controller.force_tool("weather")
    with qtbot.waitSignal(w.controller.toolPermission, timeout=REPLY_TIMEOUT_MS) as asked:
        w.submit("What is the weather in Paris?")
    assert asked.args[0].tool == "weather"
    qtbot.waitUntil(lambda: w.tool_bar.isVisible(), timeout=5_000)
    assert "“weather”" in w.tool_bar.title.text()
    with qtbot.waitSignal(w.replyFinished, timeout=REPLY_TIMEOUT_MS) as done:
        qtbot.mouseClick(w.tool_bar.once_button, Qt.MouseButton.LeftButton)
    [call] = done.args[0].tool_calls
    assert call["status"] == "ok" and call["result"].startswith("Sunny and 21 degrees")
    assert not w.tool_bar.isVisible()
    reply = next(i for i in reversed(w.chat.items) if i.kind == "assistant")
    assert reply.tools and reply.tools[0]["status"] == "ok"
    text = w.chat.toPlainText()
    assert "▸ Tool weather (t)" in text and "done in" in text
    assert "Sunny and 21" not in text  # collapsed
    w.chat._on_anchor(
        __import__("PySide6.QtCore").QtCore.QUrl(f"tools:{w.chat.items.index(reply)}")
    )
    assert "Sunny and 21 degrees" in w.chat.toPlainText()  # expanded on a click
    assert Path(data_dir / "config" / "mcp.json").exists()
