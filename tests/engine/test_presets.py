"""Presets: saved, listed, loaded (per model remembered), deleted; damaged files never fatal."""

import json

import pytest

from desklm.engine.chat.presets import PRESET_SETTINGS, PresetStore
from desklm.engine.chat.session import ChatSession
from desklm.engine.settings import Settings
from desklm.errors import DeskLMError
from tests.conftest import small_settings


def test_save_list_get_delete_and_last_per_model(tmp_path):
    st = PresetStore(tmp_path / "presets.json")
    assert st.list_all() == [] and st.problems == []
    s = Settings({"temperature": 0.2, "system_prompt": "Be terse.", "n_ctx": 8192})
    p = st.save("  Precise  ", s, model=tmp_path / "a.gguf")
    assert p.name == "Precise" and p.values["temperature"] == 0.2
    assert p.values["system_prompt"] == "Be terse." and p.values["n_ctx"] == 8192
    assert "n_threads" not in p.values and set(p.values) == set(PRESET_SETTINGS)
    st.save("creative", {"temperature": 1.3})
    assert [x.name for x in st.list_all()] == ["creative", "Precise"]
    assert st.get("precise").name == "Precise"  # case-insensitive lookup
    assert st.last_for(tmp_path / "a.gguf") == "Precise"
    assert st.last_for(tmp_path / "b.gguf") is None
    st.remember(tmp_path / "b.gguf", "creative")
    assert st.last_for(tmp_path / "b.gguf") == "creative"
    st.delete("creative")
    assert st.last_for(tmp_path / "b.gguf") is None
    with pytest.raises(DeskLMError, match="no preset 'creative'; presets: Precise"):
        st.get("creative")
    data = json.loads((tmp_path / "presets.json").read_text("utf-8"))
    assert data["schema"] == 1 and "Precise" in data["presets"]


def test_names_and_values_are_checked(tmp_path):
    st = PresetStore(tmp_path / "presets.json")
    for bad in ("", "   ", "x" * 65, "a\x07b"):
        with pytest.raises(DeskLMError):
            st.save(bad, {"temperature": 0.5})
    with pytest.raises(DeskLMError, match="temperature"):
        st.save("hot", {"temperature": 99})


def test_a_damaged_file_never_stops_the_app(tmp_path):
    path = tmp_path / "presets.json"
    path.write_text("{not json", "utf-8")
    st = PresetStore(path)
    assert st.list_all() == [] and "moved aside" in st.problems[0]
    assert (tmp_path / "presets.json.corrupt").exists()
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "presets": {
                    "ok": {
                        "settings": {
                            "temperature": 0.3,
                            "top_k": "lots",
                            "bogus": 1,
                            "n_threads": 4,
                        }
                    },
                    "no settings": {"x": 1},
                    "": {"settings": {}},
                    "list": [1],
                },
                "last_by_model": {str(tmp_path / "m.gguf"): "gone", str(tmp_path / "n.gguf"): "ok"},
            }
        ),
        "utf-8",
    )
    items = st.list_all()
    assert [p.name for p in items] == ["ok"] and items[0].values == {"temperature": 0.3}
    text = " | ".join(st.problems)
    assert "top_k ignored" in text and "unknown setting 'bogus'" in text
    assert "'no settings' skipped" in text and "'list' skipped" in text
    assert "n_threads" not in text  # the machine's threads are left out quietly
    assert st.last_for(tmp_path / "n.gguf") == "ok"
    assert st.last_for(tmp_path / "m.gguf") is None
    st.save("new", {"temperature": 0.9})  # writing works on top of a repaired file
    assert {p.name for p in st.list_all()} == {"ok", "new"}
    path.write_text(json.dumps({"schema": 99, "presets": {}}), "utf-8")
    with pytest.raises(DeskLMError, match="newer DeskLM"):
        st.list_all()


def test_slash_preset_on_a_session(engine, model_path, tmp_path):
    s = ChatSession(model_path, small_settings(max_tokens=6), engine=engine)
    s.load()  # the engine is shared: load the same model and settings (no change)
    s.settings.set("system_prompt", "You are a pirate.")
    s.apply_settings({"temperature": 0.1})
    res = s.run_command("/preset save Pirate")
    assert res.data["preset"] == "Pirate"
    s.apply_settings({"temperature": 1.5, "system_prompt": "Plain."})
    res = s.run_command("/preset")
    assert [p["name"] for p in res.data["presets"]] == ["Pirate"]
    assert res.data["last_for_model"] == "Pirate" and "* Pirate" in res.message
    res = s.run_command("/preset pirate")
    assert res.command == "preset" and not res.reloaded
    assert s.settings["temperature"] == 0.1
    assert s.settings["system_prompt"] == s.conversation.system_prompt == "You are a pirate."
    with pytest.raises(DeskLMError, match="no preset 'nope'"):
        s.run_command("/preset nope")
    assert s.run_command("/preset delete Pirate").data["preset"] == "Pirate"
    assert "no presets yet" in s.run_command("/preset").message
