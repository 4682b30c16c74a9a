import pytest

from desklm.engine.settings import LOAD_SETTINGS, SAMPLING_SETTINGS, SCHEMA, Settings, logical_cores
from desklm.errors import DeskLMError


def test_every_setting_is_declared_once_with_help_and_a_valid_default():
    assert set(LOAD_SETTINGS) | set(SAMPLING_SETTINGS) == set(SCHEMA)
    required = {
        "n_ctx",
        "n_threads",
        "n_threads_batch",
        "n_gpu_layers",
        "n_batch",
        "flash_attn",
        "use_mmap",
        "use_mlock",
        "kv_cache_type",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "max_tokens",
        "seed",
        "system_prompt",
    }
    assert required <= set(SCHEMA)
    s = Settings()
    for name, setting in SCHEMA.items():
        assert setting.help and setting.label
        assert setting.validate(s[name]) == s[name]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("n_ctx", 0, "512 to 131072"),
        ("n_ctx", -5, "n_ctx = -5"),
        ("n_threads", 0, f"1 to {logical_cores()}"),
        ("n_threads", logical_cores() + 1, "n_threads"),
        ("temperature", -0.1, "0 to 2"),
        ("top_p", 1.5, "top_p"),
        ("kv_cache_type", "q2_k", "one of f16, q8_0, q4_0"),
        ("n_gpu_layers", -3, "-1 = all"),
    ],
)
def test_out_of_range_is_rejected_with_the_setting_and_its_range(name, value, needle):
    with pytest.raises(DeskLMError) as e:
        Settings().set(name, value)
    assert name in str(e.value) and needle in str(e.value)


def test_text_values_parse_like_the_cli_and_slash_set():
    s = Settings()
    assert s.set("n_gpu_layers", "all") == -1
    assert s.set("flash_attn", "on") is True
    assert s.set("temperature", "0.25") == 0.25
    assert s.set("seed", "random") == -1
    with pytest.raises(DeskLMError, match="not a valid int"):
        s.set("n_ctx", "lots")
    with pytest.raises(DeskLMError, match="known settings"):
        s.set("n_cxt", 1024)


def test_update_is_all_or_nothing():
    s = Settings()
    before = s.to_dict()
    with pytest.raises(DeskLMError):
        s.update({"temperature": 0.1, "n_ctx": 1})
    assert s.to_dict() == before


def test_model_limits_lower_the_maximum():
    s = Settings()
    s.limits["n_ctx"] = 8192
    assert s.set("n_ctx", 8192) == 8192
    with pytest.raises(DeskLMError, match="512 to 8192"):
        s.set("n_ctx", 16384)


def test_nul_in_system_prompt_is_rejected():
    with pytest.raises(DeskLMError, match="NUL"):
        Settings().set("system_prompt", "a\x00b")


def test_every_setting_has_a_flag_generated_from_the_schema() -> None:
    """The CLI's flags come from the schema: one per setting, validated the same way as /set."""
    import argparse

    import pytest

    from desklm.cli import build_parser
    from desklm.engine.settings import settings_from_args
    from desklm.errors import DeskLMError

    for command in ("chat", "gui", "bench"):
        sub = next(
            a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[command]
        flags = {o for a in sub._actions for o in a.option_strings}
        missing = [s.cli_flag for s in SCHEMA.values() if s.cli_flag not in flags]
        assert not missing, f"desklm {command} lacks {missing}"
    args = build_parser().parse_args(
        [
            "chat",
            "--ctx",
            "1024",
            "--top-k",
            "7",
            "--flash-attn",
            "on",
            "--threads",
            "1",
            "--kv-cache-type",
            "q8_0",
            "--system",
            "Be brief.",
        ]
    )
    s = settings_from_args(args)
    assert (s["n_ctx"], s["top_k"], s["flash_attn"], s["kv_cache_type"]) == (1024, 7, True, "q8_0")
    assert s["n_threads"] == s["n_threads_batch"] == 1  # --threads alone sets both
    assert s["system_prompt"] == "Be brief."
    with pytest.raises(DeskLMError, match="n_ctx = 100 is out of range; allowed: 512 to"):
        settings_from_args(build_parser().parse_args(["chat", "--ctx", "100"]))
