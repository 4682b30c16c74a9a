"""Downloads with the real huggingface_hub client against a local HTTP server (127.0.0.1)."""

import itertools
import threading
from pathlib import Path

import pytest

from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.models import hub
from desklm.engine.models.fit import estimate
from desklm.errors import DeskLMError
from tests.conftest import REPO, small_settings


def remote(name="tiny.gguf"):
    return next(f for f in hub.list_gguf_files(REPO) if f.path == name)


def test_list_files_with_sizes_and_checksums(server):
    files = hub.list_gguf_files(REPO)
    assert [f.path for f in files] == ["gemma.gguf", "tiny.gguf"]
    g = files[0]
    assert g.size == 253_113_024 and g.sha256.startswith("a5fd3b62")


def test_fit_estimate_from_the_remote_header_only(server):
    f = remote("gemma.gguf")
    info = hub.remote_header(f)
    assert info.architecture == "gemma3" and info.block_count == 18
    from desklm.engine.monitor import NA

    assert estimate(info, 4096, free=(10**12, NA)).ram > 300 * 2**20
    ranges = [r for r in server.hub.requests if r.startswith("GET /someone")]
    assert ranges  # read with a range request, not the whole 250 MB


def test_download_with_progress_then_load_it(server):
    seen = []
    path = hub.download(remote("gemma.gguf"), lambda done, total: seen.append((done, total)))
    assert path.stat().st_size == 253_113_024
    assert seen[-1] == (253_113_024, 253_113_024)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    eng = ChatEngine()
    info = eng.load(path, small_settings())
    assert info.architecture == "gemma3"
    eng.unload()
    assert any(d["path"] == str(path) for d in hub.cached_gguf_files())


def test_an_interrupted_transfer_resumes(server):
    server.hub.break_after, server.hub.break_times = 2 << 20, 1
    path = hub.download(remote())
    assert hub.sha256_of(path) == remote().sha256


def test_a_transfer_that_keeps_failing_gives_a_reason(server):
    server.hub.break_after, server.hub.break_times = 1 << 20, 1000
    with pytest.raises(DeskLMError, match=r"download of tiny\.gguf failed"):
        hub.download(remote())


def test_a_wrong_checksum_is_caught_and_the_file_deleted(server):
    server.hub.corrupt = True
    with pytest.raises(DeskLMError, match="checksum mismatch") as e:
        hub.download(remote())
    assert "deleted" in str(e.value)
    assert hub.cached_gguf_files() == []


def test_cancel_leaves_nothing_and_a_retry_completes(server):
    cancel = threading.Event()

    def progress(done, total):
        if done > (1 << 20):
            cancel.set()

    with pytest.raises(hub.DownloadCancelled):  # the 250 MB file: many 10 MB chunks
        hub.download(remote("gemma.gguf"), progress, cancel)
    assert list(Path(hub.cache_dir()).rglob("*.incomplete")) == []  # nothing half-written left
    assert hub.cached_gguf_files() == []
    path = hub.download(remote("gemma.gguf"))  # a later attempt starts over and completes
    assert path.stat().st_size == remote("gemma.gguf").size


def test_not_found_gated_and_bad_ids(server):
    with pytest.raises(DeskLMError, match="not found"):
        hub.list_gguf_files("nobody/nothing")
    with pytest.raises(DeskLMError, match="not a repo id"):
        hub.list_gguf_files("justaname")
    server.hub.gated = True
    with pytest.raises(DeskLMError, match="access denied"):
        hub.list_gguf_files(REPO)


def test_offline_mode_is_respected(server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DeskLMError, match="HF_HUB_OFFLINE"):
        hub.list_gguf_files(REPO)
    assert server.hub.requests == []


def test_cli_pull_and_list(server):
    from tests.conftest import run_cli

    env = {"HF_HUB_OFFLINE": "0"}
    r = run_cli("models", "pull", REPO, env=env)
    assert r.returncode == 0 and "gemma.gguf" in r.stdout and "tiny.gguf" in r.stdout
    r = run_cli("models", "pull", REPO, "tiny.gguf", env=env)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path.exists() and "verified sha256" in r.stderr and "%" in r.stderr
    listed = run_cli("models", "list", "--json")
    import json

    items = json.loads(listed.stdout)
    assert [i["source"] for i in items] == ["embedded", "hugging face cache"]
    assert items[1]["repo_id"] == REPO
    bad = run_cli("models", "pull", REPO, "nope.gguf", env=env)
    assert bad.returncode == 2 and "has no file 'nope.gguf'" in bad.stderr
