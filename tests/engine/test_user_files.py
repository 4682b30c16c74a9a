"""Writing where the user points (``/export PATH``, ``history export -o PATH``) never replaces
what is there: files atomically, links through to their target, devices and pipes by opening
them, and folders, block devices and sockets refused with a reason. Real files, real devices."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from desklm.engine.store.files import ConversationStore, export_record, write_user_file
from desklm.errors import DeskLMError
from tests.conftest import run_cli

DATA = b"# exported\n\nhello\n"
DEVICES = {"/dev/null": (1, 3), "/dev/full": (1, 7)}


@pytest.fixture(autouse=True)
def dev_guard():
    """A regression here (as root) would turn /dev/null into a file for the whole machine:
    repair it and fail loudly."""
    yield
    broken = [d for d in DEVICES if not stat.S_ISCHR(os.lstat(d).st_mode)]
    if not os.path.islink("/dev/stdout"):
        broken.append("/dev/stdout")
    for d in broken:
        os.unlink(d)
        if d == "/dev/stdout":
            os.symlink("/proc/self/fd/1", d)
        else:
            os.mknod(d, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[d]))
            os.chmod(d, 0o666)
    assert not broken, f"replaced {broken} (repaired)"


def device(tmp_path: Path, name: str) -> Path:
    """A character device of our own where we may make one (root), else the system's."""
    if os.geteuid() != 0:
        return Path(name)
    p = tmp_path / Path(name).name
    os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(*DEVICES[name]))
    return p


def read_fifo(path: Path, out: list[bytes]) -> threading.Thread:
    def run() -> None:
        with open(path, "rb") as f:
            out.append(f.read())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_regular_file_is_replaced_atomically_keeping_its_permissions(tmp_path):
    f = tmp_path / "chat.md"
    f.write_text("old")
    f.chmod(0o644)
    write_user_file(f, DATA)
    assert f.read_bytes() == DATA and stat.S_IMODE(f.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["chat.md"]  # no temp file left


def test_a_new_name_is_created_and_a_missing_folder_is_a_reason(tmp_path):
    write_user_file(tmp_path / "new.md", DATA)
    assert (tmp_path / "new.md").read_bytes() == DATA
    with pytest.raises(DeskLMError, match="does not exist"):
        write_user_file(tmp_path / "nope" / "x.md", DATA)
    assert not (tmp_path / "nope").exists()  # no folders made on the user's behalf


@pytest.mark.parametrize("kind", ["to a file", "to a new name", "chain of two"])
def test_a_symlink_is_written_through_and_stays_a_link(tmp_path, kind):
    target = tmp_path / "real.md"
    if kind != "to a new name":
        target.write_text("old")
    link = tmp_path / "link.md"
    if kind == "chain of two":
        mid = tmp_path / "mid.md"
        mid.symlink_to(target)
        link.symlink_to(mid)
    else:
        link.symlink_to(target)
    write_user_file(link, DATA)
    assert link.is_symlink() and target.read_bytes() == DATA and not target.is_symlink()


def test_a_hard_linked_file_is_written_in_place_so_both_names_see_it(tmp_path):
    a = tmp_path / "a.md"
    a.write_text("old")
    b = tmp_path / "b.md"
    os.link(a, b)
    write_user_file(b, DATA)
    assert a.read_bytes() == DATA and os.stat(a).st_ino == os.stat(b).st_ino


@pytest.mark.parametrize(
    "kind",
    [
        "folder",
        "link to a folder",
        "socket",
        "link loop",
        "fifo without a reader",
        "nul in the name",
    ],
)
def test_what_cannot_take_a_file_is_refused_with_a_reason_and_left_alone(tmp_path, kind):
    p = tmp_path / "target"
    if kind == "folder":
        p.mkdir()
        (p / "keep.txt").write_text("mine")
    elif kind == "link to a folder":
        (tmp_path / "d").mkdir()
        p.symlink_to(tmp_path / "d")
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
    elif kind == "link loop":
        p.symlink_to(p)
    elif kind == "fifo without a reader":
        os.mkfifo(p)
    elif kind == "nul in the name":
        p = tmp_path / "bad\x00name.md"
    before = os.lstat(p).st_mode if kind != "nul in the name" else None
    with pytest.raises(DeskLMError) as e:
        write_user_file(p, DATA)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg.replace("\\x00", "")
    needle = {
        "folder": "is a folder",
        "link to a folder": "is a folder",
        "socket": "socket",
        "link loop": "symbolic link loop",
        "fifo without a reader": "no program is reading",
        "nul in the name": "NUL",
    }[kind]
    assert needle in msg
    if before is not None:
        assert os.lstat(p).st_mode == before  # not replaced by a regular file
    if kind == "folder":
        assert (p / "keep.txt").read_text() == "mine"


def test_a_character_device_is_written_and_stays_a_device(tmp_path):
    null = device(tmp_path, "/dev/null")
    write_user_file(null, DATA)
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    link = tmp_path / "null-link"
    link.symlink_to(null)
    write_user_file(link, DATA)
    assert link.is_symlink() and stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_full_device_is_a_reason_not_a_crash(tmp_path):
    full = device(tmp_path, "/dev/full")
    with pytest.raises(DeskLMError, match="No space left"):
        write_user_file(full, DATA)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


def test_a_named_pipe_with_a_reader_gets_the_data_and_stays_a_pipe(tmp_path):
    p = tmp_path / "pipe"
    os.mkfifo(p)
    got: list[bytes] = []
    t = read_fifo(p, got)
    import time

    for _ in range(200):  # wait for the reader to open its end
        try:
            write_user_file(p, DATA)
            break
        except DeskLMError:
            time.sleep(0.01)
    t.join(10)
    assert got == [DATA] and stat.S_ISFIFO(os.lstat(p).st_mode)


def test_dev_stdout_prints_whatever_stdout_is(tmp_path):
    code = (
        "from pathlib import Path; from desklm.engine.store.files import write_user_file\n"
        "print('before', flush=True)\n"
        "write_user_file(Path('/dev/stdout'), b'exported\\n')\n"
        "write_user_file(Path('/dev/fd/1'), b'again\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, env=env)
    assert r.stdout == b"before\nexported\nagain\n", r.stderr[-500:]
    out = tmp_path / "out.txt"
    out.write_text("kept\n")
    with open(out, "a") as f:  # like `>> out.txt`: appended, the file not replaced
        ino = os.fstat(f.fileno()).st_ino
        subprocess.run([sys.executable, "-c", code], stdout=f, timeout=60, env=env, check=True)
    assert out.read_text() == "kept\nbefore\nexported\nagain\n" and out.stat().st_ino == ino


def rec(conv_id="abc123"):
    return {
        "id": conv_id,
        "title": "Hello",
        "created": 1.0,
        "model": "m.gguf",
        "settings": {},
        "messages": [{"id": "u", "role": "user", "content": "question", "created": 1.0}],
    }


def test_export_record_uses_the_same_rules(tmp_path):
    link = tmp_path / "chat.md"
    link.symlink_to(tmp_path / "real.md")
    export_record(rec(), link)
    assert link.is_symlink() and "question" in (tmp_path / "real.md").read_text()
    with pytest.raises(DeskLMError, match="is a folder"):
        export_record(rec(), tmp_path)


def test_history_export_to_dev_stdout_and_odd_targets(data_dir, tmp_path):
    ConversationStore(data_dir / "data" / "conversations").save(rec())
    r = run_cli("history", "export", "abc123", "--format", "json", "-o", "/dev/stdout")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == "abc123"
    null = device(tmp_path, "/dev/null")
    r = run_cli("history", "export", "abc123", "-o", str(null))
    assert r.returncode == 0 and stat.S_ISCHR(os.lstat(null).st_mode)
    r = run_cli("history", "export", "abc123", "-o", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is a folder" in r.stderr


def test_the_bench_chart_follows_the_same_rule(tmp_path):
    from desklm.bench import run as benchrun

    out = {
        "model": "m.gguf",
        "machine": "test",
        "targets": [{"met": True}],
        "median": {
            "raw": {"gen_tps": 10.0, "prompt_tps": 50.0},
            "engine": {"gen_tps": 9.5, "prompt_tps": 49.0},
        },
        "multi_turn": [{"ttft_s": 0.05 + i / 1000} for i in range(20)],
    }
    link = tmp_path / "chart.png"
    link.symlink_to(tmp_path / "real.png")
    benchrun.plot(out, link)
    assert link.is_symlink() and (tmp_path / "real.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DeskLMError, match="is a folder"):
        benchrun.plot(out, tmp_path)
