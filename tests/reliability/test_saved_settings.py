"""Saved settings beyond what the model allows are lowered with a note, not a failed start."""

from __future__ import annotations

import pytest

from desklm.engine.backends.local.engine import ChatEngine
from desklm.engine.chat.session import ChatSession
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError
from tests.reliability.conftest import patch_u32


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, model_path):
    """The embedded model declaring a 1024-token training context."""
    return patch_u32(
        model_path, tmp_path_factory.mktemp("short") / "short.gguf", "gemma3.context_length", 1024
    )


def test_saved_settings_above_the_models_limits_are_clamped_with_a_note(short_model):
    eng = ChatEngine()
    eng.probe = False
    saved = Settings({"n_ctx": 131072, "n_gpu_layers": 500, "max_tokens": 3, "seed": 1})
    s = ChatSession(short_model, saved, engine=eng)
    try:
        info = s.load(clamp=True)
        assert info.n_ctx == 1024 and s.settings["n_ctx"] == 1024
        assert s.settings["n_gpu_layers"] == 19
        assert "n_ctx lowered from 131072 to 1024 (the model's maximum)" in info.notes
        assert any(n.startswith("n_gpu_layers lowered from 500") for n in info.notes)
        assert s.send("hello").stats.n_ctx == 1024
    finally:
        eng.unload()


def test_settings_typed_now_are_still_refused_with_the_range(short_model):
    eng = ChatEngine()
    eng.probe = False
    s = ChatSession(short_model, Settings({"n_ctx": 4096}), engine=eng)
    with pytest.raises(DeskLMError, match="n_ctx = 4096 is out of range; allowed: 512 to 1024"):
        s.load()
    assert not eng.loaded
