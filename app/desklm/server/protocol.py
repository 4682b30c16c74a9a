"""The OpenAI wire format: request validation, error bodies, response and stream chunks.

Pure logic (no HTTP, no model): unit-tested on its own. Requests are validated strictly:
a parameter OpenAI does not have is a 400 ("Unrecognized request argument supplied"), one that
OpenAI has but DeskLM cannot honour is a 400 naming it, never silently ignored, except the few
that change nothing about the reply (``user``, ``metadata``, ``store``, ...).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from desklm.errors import DeskLMError

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more than any context this app can hold
MAX_STOP = 4  # as OpenAI


class ApiError(DeskLMError):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(
    message: str, param: str | None = None, code: str | None = "invalid_value"
) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def unsupported(param: str, what: str) -> ApiError:
    return ApiError(
        400,
        f"'{param}' is not supported by DeskLM: {what}",
        "invalid_request_error",
        "unsupported_parameter",
        param,
    )


# --- requests ---------------------------------------------------------------------------------
_STRICT = ConfigDict(extra="forbid", strict=True)


class _TextPart(BaseModel):
    model_config = _STRICT
    type: str
    text: str | None = None
    image_url: Any = None
    input_audio: Any = None
    file: Any = None


class _CalledFunction(BaseModel):
    model_config = _STRICT
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    """An earlier call, in an assistant message of the conversation sent back."""

    model_config = _STRICT
    id: str
    type: Literal["function"]
    function: _CalledFunction


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    refusal: Any = None


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False
    include_obfuscation: bool | None = None


class _JsonSchema(BaseModel):
    model_config = _STRICT
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class _FunctionDef(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    """A tool on offer: ``{"type": "function", "function": {name, description, parameters}}``."""

    model_config = _STRICT
    type: Literal["function"]
    function: _FunctionDef


class _NamedFunction(BaseModel):
    model_config = _STRICT
    name: str


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: _NamedFunction


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _Sampling(BaseModel):
    """Parameters both endpoints share."""

    model_config = _STRICT
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Any] | None = None
    logprobs: Any = None
    user: str | None = None  # accepted, unused
    # llama.cpp's own sampling knobs (llama-server, LM Studio and Ollama accept these too)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, ge=0.5, le=2.0)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP:
                raise ValueError(f"at most {MAX_STOP} stop sequences")
            if any(not s for s in v):
                raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def check_common(self) -> None:
        if self.n not in (None, 1):
            raise unsupported("n", "one choice per request (n = 1)")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise unsupported(name, "use repeat_penalty instead")
        if self.logit_bias:
            raise unsupported("logit_bias", "token biases are not applied")
        if self.logprobs not in (None, False):
            raise unsupported("logprobs", "log probabilities are not returned")
        if self.stream_options is not None and not self.stream:
            raise bad_request(
                "stream_options is only allowed when stream is true", "stream_options"
            )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling_values(self) -> dict[str, Any]:
        """The request's sampling parameters as DeskLM setting values (only those given)."""
        out: dict[str, Any] = {}
        for ours, theirs in (
            ("temperature", self.temperature),
            ("top_p", self.top_p),
            ("max_tokens", self.max_tokens),
            ("top_k", self.top_k),
            ("min_p", self.min_p),
            ("repeat_penalty", self.repeat_penalty),
        ):
            if theirs is not None:
                out[ours] = theirs
        if self.seed is not None:
            out["seed"] = self.seed % (2**31 - 1)  # OpenAI takes 64-bit seeds; llama.cpp 31
        return out


R = TypeVar("R", bound="_Sampling")


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    top_logprobs: int | None = None
    metadata: dict[str, Any] | None = None  # accepted, unused
    store: bool | None = None  # accepted: DeskLM never stores API conversations
    service_tier: str | None = None  # accepted, unused
    reasoning_effort: str | None = None  # accepted, unused: no reasoning control
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None

    def check(self) -> None:
        self.check_common()
        if self.functions or self.function_call is not None:
            raise unsupported(
                "functions" if self.functions else "function_call",
                "the deprecated functions API (use tools and tool_choice)",
            )
        self.check_tools()
        if self.top_logprobs:
            raise unsupported("top_logprobs", "log probabilities are not returned")
        if self.modalities not in (None, ["text"]):
            raise unsupported("modalities", "text only")
        if self.audio is not None:
            raise unsupported("audio", "text only")
        if self.prediction is not None:
            raise unsupported("prediction", "no predicted outputs")
        if self.web_search_options is not None:
            raise unsupported("web_search_options", "no web search")
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise bad_request(
                    "max_tokens and max_completion_tokens differ; give one", "max_completion_tokens"
                )
            self.max_tokens = self.max_completion_tokens
        rf = self.response_format
        if (
            rf is not None
            and rf.type == "json_schema"
            and (rf.json_schema is None or rf.json_schema.schema_ is None)
        ):
            raise bad_request(
                "response_format json_schema needs json_schema.schema",
                "response_format.json_schema",
            )

    # -- tools --
    def check_tools(self) -> None:
        """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as OpenAI checks them."""
        if not self.tools:
            if self.tool_choice is not None:
                raise bad_request(
                    "Invalid value for 'tool_choice': 'tool_choice' is only "
                    "allowed when 'tools' are specified.",
                    "tool_choice",
                )
            if self.parallel_tool_calls is not None:
                raise bad_request(
                    "Invalid value for 'parallel_tool_calls': "
                    "'parallel_tool_calls' is only allowed when 'tools' are "
                    "specified.",
                    "parallel_tool_calls",
                )
            return
        seen: set[str] = set()
        for i, t in enumerate(self.tools):
            fn = t.function
            if fn.name in seen:
                raise bad_request(
                    f"Invalid 'tools': duplicate function name '{fn.name}'.",
                    f"tools[{i}].function.name",
                )
            seen.add(fn.name)
            if fn.parameters is not None:
                check_tool_schema(fn.name, fn.parameters, f"tools[{i}].function.parameters")
        named = self.named_tool
        if named is not None and named not in seen:
            raise bad_request(
                f"Invalid value for 'tool_choice': no function named '{named}' is in 'tools'.",
                "tool_choice",
            )
        if (
            self.forced_tool
            and self.response_format is not None
            and self.response_format.type != "text"
        ):
            raise unsupported(
                "response_format", "a response format together with a forced tool_choice"
            )

    @property
    def named_tool(self) -> str | None:
        tc = self.tool_choice
        return tc.function.name if isinstance(tc, NamedToolChoice) else None

    @property
    def forced_tool(self) -> bool:
        """tool_choice ``required`` or a named function: the reply must be a call."""
        return bool(self.tools) and (self.tool_choice == "required" or self.named_tool is not None)

    @property
    def offers_tools(self) -> bool:
        """Tools are on offer (given, and tool_choice is not ``none``)."""
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def uses_tools(self) -> bool:
        """The request needs the tool path: tools given, or a history holding calls."""
        return bool(self.tools) or any(m.role == "tool" or m.tool_calls for m in self.messages)

    def tool_messages(self) -> list[dict[str, Any]]:
        """The messages with their calls and results, for ``render_tools``: each
        ``{"role", "content"}`` plus an assistant's ``tool_calls`` (as ``ToolCall`` s) and a
        tool's ``tool_call_id`` and ``name`` (the function it answers)."""
        from desklm.engine import ToolCall

        plain = self.plain_messages(allow_tools=True)
        out: list[dict[str, Any]] = []
        pending: dict[str, str] = {}  # call id -> function name, awaiting a result
        for i, (m, p) in enumerate(zip(self.messages, plain, strict=True)):
            msg: dict[str, Any] = dict(p)
            if m.role == "assistant" and m.tool_calls:
                msg["tool_calls"] = [
                    ToolCall(c.function.name, c.function.arguments, c.id) for c in m.tool_calls
                ]
                pending = {c.id: c.function.name for c in m.tool_calls}
            elif m.role == "tool":
                if m.tool_call_id is None:
                    raise bad_request(
                        f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                        f"messages[{i}].tool_call_id",
                        "missing_required_parameter",
                    )
                if m.tool_call_id not in pending:
                    raise bad_request(
                        "Invalid parameter: messages with role 'tool' must be a "
                        "response to a preceeding message with 'tool_calls'.",
                        f"messages[{i}].role",
                    )
                msg["tool_call_id"] = m.tool_call_id
                msg["name"] = pending[m.tool_call_id]
            else:
                pending = {} if m.role != "assistant" else pending
            out.append(msg)
        return out

    def plain_messages(self, allow_tools: bool = False) -> list[dict[str, str]]:
        """Messages as ``{"role", "content"}`` text for the chat format (``developer`` is the
        system role). Only text: an image or audio part is refused."""
        out = []
        for i, m in enumerate(self.messages):
            if m.role == "function":
                raise unsupported(f"messages[{i}].role", "the deprecated functions API (use tools)")
            if not allow_tools and (m.role == "tool" or m.tool_calls):
                raise unsupported(f"messages[{i}].role", "tool messages without tools")
            if isinstance(m.content, list):
                texts = []
                for j, part in enumerate(m.content):
                    if part.type != "text" or part.text is None:
                        raise unsupported(
                            f"messages[{i}].content[{j}]",
                            f"content parts of type '{part.type}' (text only)",
                        )
                    texts.append(part.text)
                text = "".join(texts)
            else:
                text = m.content or ""
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": text.replace("\x00", "")})
        if out[-1]["role"] == "assistant":
            raise bad_request(
                "the last message must not be the assistant's (DeskLM does not "
                "continue a partial reply)",
                f"messages[{len(out) - 1}].role",
            )
        return out


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def check(self) -> None:
        self.check_common()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise unsupported("prompt", "one prompt string per request")
        if self.suffix:
            raise unsupported("suffix", "no fill-in-the-middle")
        if self.best_of not in (None, 1):
            raise unsupported("best_of", "one candidate per request")

    @property
    def prompt_text(self) -> str:
        p = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return p.replace("\x00", "")


def check_tool_schema(name: str, schema: dict[str, Any], param: str) -> None:
    """A function's ``parameters``: a valid JSON Schema for an object, else a 400 as OpenAI's
    ("Invalid schema for function ...")."""
    import jsonschema

    if schema.get("type", "object") != "object":
        raise bad_request(
            f"Invalid schema for function '{name}': schema must be a JSON Schema "
            "of 'type: \"object\"', got 'type: \"{schema.get('type')}\"'.",
            param,
            "invalid_function_parameters",
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise bad_request(
            f"Invalid schema for function '{name}': {e.message}.",
            param,
            "invalid_function_parameters",
        ) from None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: send valid "
            "JSON with Content-Type: application/json)",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return data


def parse_request(cls: type[R], data: dict[str, Any]) -> R:
    """Validate ``data`` as ``cls``; the first problem becomes a 400 naming the parameter."""
    try:
        req = cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        # a union (str | list) reports each branch; report the parameter, not the branch
        loc = tuple(
            p
            for p in err["loc"]
            if not (
                isinstance(p, str)
                and (
                    p in ("str", "list[str]", "list[_TextPart]", "NamedToolChoice")
                    or p.startswith(("function-", "list[", "literal["))
                )
            )
        )
        param = _loc(loc)
        if err["type"] == "extra_forbidden":
            raise bad_request(
                f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
            ) from None
        if err["type"] == "missing":
            raise bad_request(
                f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
            ) from None
        raise bad_request(f"Invalid value for '{param}': {err['msg']}.", param) from None
    req.check()  # type: ignore[attr-defined]
    return req


# --- responses --------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    cid: str,
    model: str,
    reply: str | None,
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish: str | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        out["usage"] = None
    return out


def text_completion(
    cid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def text_chunk(
    cid: str, model: str, created: int, text: str, finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(
    cid: str, model: str, created: int, obj: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": obj,
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    data = (
        obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n".encode()


def finish_reason(engine_reason: str) -> str:
    return "length" if engine_reason == "length" else "stop"
