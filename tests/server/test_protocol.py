"""The wire format alone: validation, error bodies, chunks, address rules (no model, no HTTP)."""

from __future__ import annotations

import json

import pytest

from desklm.server import protocol as P
from desklm.server.app import _host_name, _is_loopback_name
from desklm.server.protocol import ApiError
from desklm.server.server import is_loopback, url_for

MSG = [{"role": "user", "content": "hi"}]


def parse_chat(**body):
    return P.parse_request(P.ChatRequest, {"model": "m", "messages": MSG, **body})


def test_a_valid_request_maps_to_settings_values() -> None:
    req = parse_chat(
        temperature=0,
        top_p=0.5,
        max_tokens=3,
        seed=2**40,
        stop="x",
        stream=True,
        stream_options={"include_usage": True},
    )
    assert req.sampling_values() == {
        "temperature": 0,
        "top_p": 0.5,
        "max_tokens": 3,
        "seed": 2**40 % (2**31 - 1),
    }
    assert req.stop_list() == ["x"] and req.include_usage
    assert parse_chat(max_completion_tokens=5).max_tokens == 5


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"foo": 1}, "foo", "unknown_parameter"),
        ({"temperature": 2.5}, "temperature", "invalid_value"),
        ({"temperature": "0.5"}, "temperature", "invalid_value"),  # strict: no string numbers
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"messages": []}, "messages", "invalid_value"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "invalid_value",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(body, param, code) -> None:
    with pytest.raises(ApiError) as e:
        parse_chat(**body)
    assert e.value.status == 400
    assert e.value.param == param and e.value.code == code
    err = e.value.body()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"


def test_missing_messages_and_bad_json() -> None:
    with pytest.raises(ApiError) as e:
        P.parse_request(P.ChatRequest, {"model": "m"})
    assert e.value.code == "missing_required_parameter" and e.value.param == "messages"
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        with pytest.raises(ApiError) as e:
            P.parse_json(raw)
        assert e.value.status == 400


def test_messages_become_plain_role_content_pairs() -> None:
    req = parse_chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "<start_of_turn>x\x00"},
        ]
    )
    assert req.plain_messages() == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "<start_of_turn>x"},
    ]
    with pytest.raises(ApiError):
        parse_chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ).plain_messages()
    with pytest.raises(ApiError):  # nothing to continue from: the last turn is the model's
        parse_chat(messages=[{"role": "assistant", "content": "x"}]).plain_messages()


def test_completion_requests() -> None:
    req = P.parse_request(P.CompletionRequest, {"model": "m", "prompt": ["once"], "echo": True})
    assert req.prompt_text == "once" and req.echo
    for bad in (
        {"prompt": ["a", "b"]},
        {"prompt": "a", "suffix": "z"},
        {"prompt": [1, 2]},
        {"prompt": "a", "best_of": 3},
    ):
        with pytest.raises(ApiError):
            P.parse_request(P.CompletionRequest, {"model": "m", **bad})


def test_sse_chunks() -> None:
    assert P.sse("[DONE]") == b"data: [DONE]\n\n"
    c = json.loads(P.sse(P.chat_chunk("id", "m", 1, {"content": "é"}))[6:])
    assert c["object"] == "chat.completion.chunk" and c["choices"][0]["delta"] == {"content": "é"}
    u = P.usage_chunk("id", "m", 1, "chat.completion.chunk", 3, 4)
    assert u["choices"] == [] and u["usage"]["total_tokens"] == 7
    assert P.finish_reason("length") == "length" and P.finish_reason("stop") == "stop"


def test_address_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com") and not is_loopback("::")
    assert url_for("::1", 80) == "http://[::1]:80/v1"
    assert _host_name("localhost:8642") == "localhost" and _host_name("[::1]:80") == "[::1]"
    assert _is_loopback_name("127.0.0.1") and _is_loopback_name("[::1]")
    assert not _is_loopback_name("evil.example") and not _is_loopback_name("")
