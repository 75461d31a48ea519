"""Turn HTTP bodies into validated `CompletionRequest`s, enforcing the configured limits.

Everything a caller can get wrong is refused here with a message naming the field, before
any upstream is called.
"""

from __future__ import annotations

from app.core.errors import InvalidRequest
from app.core.model_names import RULE, model_field_problem
from app.core.settings import Settings
from app.modules.ai.domain import ChatMessage, CompletionRequest, ResponseSchema, Role
from app.modules.ai.errors import ContextLengthExceeded, InvalidModelName, UnsupportedParameter
from app.modules.ai.routing import ALIASES
from app.modules.ai.schemas import ChatCompletionBody, CompletionBody
from app.modules.ai.structured import schema_problem

_ROLES = {
    "system": Role.SYSTEM,
    "developer": Role.SYSTEM,
    "user": Role.USER,
    "assistant": Role.ASSISTANT,
}


def completion_request(body: CompletionBody, settings: Settings) -> CompletionRequest:
    if body.messages is not None:
        messages = [ChatMessage(_ROLES[m.role], m.content) for m in body.messages]
        if body.system:
            messages.insert(0, ChatMessage(Role.SYSTEM, body.system))
    else:
        assert body.prompt is not None  # guaranteed by CompletionBody's validator
        messages = [ChatMessage(Role.USER, body.prompt)]
        if body.system:
            messages.insert(0, ChatMessage(Role.SYSTEM, body.system))
    return _checked(
        CompletionRequest(
            messages=tuple(messages),
            model=body.model or settings.ai_default_model,
            temperature=body.temperature,
            max_tokens=body.max_tokens,
            json_mode=body.json_mode,
            intent=body.intent,
            strategy=body.strategy,
            cache=body.cache,
        ),
        settings,
    )


def chat_request(body: ChatCompletionBody, settings: Settings) -> CompletionRequest:
    if body.tools:
        raise UnsupportedParameter(
            "'tools' (function calling) is not supported by this gateway; for structured "
            "output send response_format with a json_schema instead",
            param="tools",
        )
    messages: list[ChatMessage] = []
    for message in body.messages:
        if isinstance(message.content, list):
            text = "".join(part.text for part in message.content)
        else:
            text = message.content
        messages.append(ChatMessage(_ROLES[message.role], text))
    json_mode = body.response_format is not None and body.response_format.type != "text"
    return _checked(
        CompletionRequest(
            messages=tuple(messages),
            model=body.model,
            temperature=body.temperature,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            json_mode=json_mode,
            response_schema=_response_schema(body),
        ),
        settings,
    )


def _response_schema(body: ChatCompletionBody) -> ResponseSchema | None:
    """The caller's json_schema, checked: a schema we cannot check answers against is the
    caller's 400. A streamed answer cannot be checked before its text is sent (nor fail
    over once it is), so `stream` with a schema is refused."""
    fmt = body.response_format
    if fmt is None or fmt.type != "json_schema":
        return None
    spec = (fmt.model_extra or {}).get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidRequest(
            "response_format json_schema needs a 'json_schema' object with a 'name' and a 'schema'",
            extra={"errors": [{"key": "response_format.json_schema", "message": "missing"}]},
        )
    schema = spec.get("schema", {})
    problem = schema_problem(schema)
    if problem is not None:
        raise UnsupportedParameter(problem, param="response_format")
    if body.stream:
        raise UnsupportedParameter(
            "stream with a json_schema response_format is not supported: the answer is "
            "checked against the schema before it is sent; ask without stream",
            param="stream",
        )
    strict = spec.get("strict")
    description = spec.get("description")
    return ResponseSchema(
        name=spec["name"],
        schema=schema,
        strict=strict if isinstance(strict, bool) else None,
        description=description if isinstance(description, str) else None,
    )


def _checked(request: CompletionRequest, settings: Settings) -> CompletionRequest:
    size = sum(len(m.content) for m in request.messages)
    if size > settings.ai_max_prompt_chars:
        raise ContextLengthExceeded(
            f"prompt is {size} characters; the limit is {settings.ai_max_prompt_chars} "
            "(AI_MAX_PROMPT_CHARS)"
        )
    if not any(m.role is Role.USER for m in request.messages):
        raise InvalidRequest("messages must include at least one 'user' message")
    if request.max_tokens is not None and request.max_tokens > settings.ai_max_tokens_limit:
        raise InvalidRequest(
            f"max_tokens is {request.max_tokens}; it must be between 1 and "
            f"{settings.ai_max_tokens_limit}"
        )
    if not request.model.strip():
        raise InvalidRequest(f"model must be an alias ({', '.join(ALIASES)}) or a model name")
    problem = model_field_problem(request.model)
    if problem is not None:
        # The name is not echoed: it is the caller's text, and may be anything.
        raise InvalidModelName(
            f"model {problem}. A model is an alias ({', '.join(ALIASES)}), a model name or "
            f"provider/model, made of {RULE}; a model id holds at most one '/' (as in "
            "groq/openai/gpt-oss-20b). Dot segments, percent-escapes, '?', '#', '\\' and "
            "non-ASCII characters are refused"
        )
    return request
