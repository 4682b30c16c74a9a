"""A log file that cannot be written never spills tracebacks: one line, then the app goes on."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

LOG_MANY = (
    "import logging, os\n"
    "from desklm.logs import setup_logging\n"
    "import desklm.engine.store.files\n"
    "path = setup_logging()\n"
    "if os.environ.get('DROP_TO_NOBODY') and os.geteuid() == 0:\n"
    "    os.setgid(65534); os.setuid(65534)\n"
    "for i in range(20):\n"
    "    logging.getLogger('desklm.engine').warning('message %d %s', i, 'x' * 200)\n"
    "logging.getLogger('desklm.engine').info('bad args %d', 'not a number')\n"
    "print('still running')\n"
)


def full_device(where: Path) -> Path:
    """A character device that answers every write with ENOSPC: ours where we may make one."""
    if os.geteuid() != 0:
        return Path("/dev/full")
    p = where / "full"
    os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return p


@pytest.mark.parametrize("case", ["disk full", "folder read-only at rotation"])
def test_an_unwritable_log_is_one_line_not_tracebacks(case):
    base = Path(tempfile.mkdtemp())  # not under /tmp/pytest-of-root: 'nobody' must reach it
    try:
        base.chmod(0o755)
        logs = base / "logs"
        logs.mkdir()
        env = {**os.environ, "DESKLM_DATA_DIR": str(base), "PYTHONPATH": os.pathsep.join(sys.path)}
        if case == "disk full":
            (logs / "desklm.log").symlink_to(full_device(base))
        else:  # the file is writable, its folder not: the first rotation fails
            if os.geteuid() != 0:
                pytest.fail("needs root to hand the file to another user")
            f = logs / "desklm.log"
            f.write_bytes(b"x" * 1_999_990)
            os.chown(f, 65534, 65534)
            logs.chmod(0o755)
            env["DROP_TO_NOBODY"] = "1"
        r = subprocess.run(
            [sys.executable, "-c", LOG_MANY], capture_output=True, text=True, timeout=60, env=env
        )
        assert r.returncode == 0 and r.stdout == "still running\n", r.stderr[-1500:]
        assert "Logging error" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
        notes = r.stderr.splitlines()
        assert len(notes) <= 2 and all(n.startswith("desklm: note: ") for n in notes), notes
        assert any("cannot write the log file" in n for n in notes)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_desklm_chat_with_a_full_disk_for_its_log(data_dir, model_path, tmp_path):
    (data_dir / "logs").mkdir(parents=True)
    (data_dir / "logs" / "desklm.log").symlink_to(full_device(tmp_path))
    r = run_cli("chat", "--json", "--ctx", "512", "--max-tokens", "2", stdin="hi\nagain\n")
    assert r.returncode == 0 and r.stdout.count("completion_tokens") == 2, r.stderr[-800:]
    assert "Logging error" not in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("cannot write the log file") == 1


LEVELS = (
    "import logging, sys\n"
    "from desklm.logs import setup_logging\n"
    "path = setup_logging(logging.DEBUG if sys.argv[1] == 'debug' else logging.INFO)\n"
    "log = logging.getLogger('desklm.engine')\n"
    "log.debug('a debug line'); log.info('an info line')\n"
    "print(log.isEnabledFor(logging.DEBUG), open(path).read().count('a debug line'))\n"
)


@pytest.mark.parametrize(("how", "expect"), [("plain", "False 0"), ("debug", "True 1")])
def test_debug_records_are_not_even_made_without_debug(how, expect, tmp_path):
    """Without --debug a debug record is not built at all (the batch logs one per step: the
    frame lookup and record cost 3% of the inference thread when only handlers filtered it);
    with --debug it reaches the file."""
    env = {
        **os.environ,
        "DESKLM_DATA_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("DESKLM_DEBUG", None)
    r = subprocess.run(
        [sys.executable, "-c", LEVELS, how], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expect
