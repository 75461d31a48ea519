"""Structured output through the gateway as clients ask for it: `response_format` with a
`json_schema` (what the openai SDK's `parse` and LangChain's `with_structured_output` send),
passed to OpenAI-style providers as it is and to Gemini as its response schema, the answer
checked against the schema, and a provider whose answer does not fit failed over."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from app.core.settings import ProviderName
from app.main import create_app
from tests.support.client import CALLER_KEY
from tests.support.live import live_server
from tests.support.sandbox import Sandbox, sandbox_settings


class Author(BaseModel):
    name: str
    orcid: str | None = None


class Paper(BaseModel):
    title: str
    year: int = Field(ge=1900)
    open_access: bool
    kind: Literal["article", "review"]
    authors: list[Author] = Field(min_length=1)


USER = [{"role": "user", "content": "Describe one paper."}]


@pytest.fixture
def live(sandbox: Sandbox) -> Iterator[str]:
    with live_server(create_app(sandbox_settings(sandbox.base_url))) as url:
        yield url


def _sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=CALLER_KEY, max_retries=0)


def test_sdk_parse_gets_a_fitting_answer_and_groq_gets_the_schema(
    live: str, sandbox: Sandbox
) -> None:
    reply = _sdk(live).chat.completions.parse(model="fast", messages=USER, response_format=Paper)  # type: ignore[arg-type]
    paper = reply.choices[0].message.parsed
    assert isinstance(paper, Paper)
    assert paper.year >= 1900
    assert len(paper.authors) == 1
    sent = sandbox.last("groq")["json"]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Paper"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["properties"]["authors"]["minItems"] == 1


def test_a_provider_whose_answer_does_not_fit_fails_over(live: str, sandbox: Sandbox) -> None:
    sandbox.chaos("groq", schema_mismatch=True)
    reply = _sdk(live).chat.completions.parse(model="fast", messages=USER, response_format=Paper)  # type: ignore[arg-type]
    assert isinstance(reply.choices[0].message.parsed, Paper)
    assert reply.model_extra is not None
    assert reply.model_extra["provider"] != "groq"
    assert sandbox.completions("groq") >= 1


def test_gemini_gets_its_own_schema_dialect(sandbox: Sandbox) -> None:
    settings = sandbox_settings(sandbox.base_url, ai_provider_priority=[ProviderName.GEMINI])
    with live_server(create_app(settings)) as url:
        reply = _sdk(url).chat.completions.parse(model="fast", messages=USER, response_format=Paper)  # type: ignore[arg-type]
    assert isinstance(reply.choices[0].message.parsed, Paper)
    config = sandbox.last("gemini")["json"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"] == "OBJECT"
    assert "additionalProperties" not in str(schema)
    assert "$ref" not in str(schema)
    assert "$defs" not in schema
    author = schema["properties"]["authors"]["items"]
    assert author["type"] == "OBJECT"
    assert author["properties"]["orcid"] == {"type": "STRING", "nullable": True}
    assert schema["properties"]["kind"] == {"type": "STRING", "enum": ["article", "review"]}


def test_no_provider_fits_is_a_503_and_nothing_unfit_is_returned(
    live: str, sandbox: Sandbox
) -> None:
    for provider in ("groq", "gemini", "azure", "openai"):
        sandbox.chaos(provider, schema_mismatch=True)
    with pytest.raises(openai.InternalServerError) as failed:
        _sdk(live).chat.completions.parse(model="fast", messages=USER, response_format=Paper)  # type: ignore[arg-type]
    assert failed.value.status_code == 503
    assert "bad_response" in failed.value.message
    assert "sandbox: not the schema" not in str(failed.value.body)


def test_langchain_with_structured_output_passes_through(live: str, sandbox: Sandbox) -> None:
    model = ChatOpenAI(
        base_url=f"{live}/v1", api_key=CALLER_KEY, model="fast", max_retries=0
    ).with_structured_output(Paper)  # type: ignore[arg-type]
    paper = model.invoke("Describe one paper.")
    assert isinstance(paper, Paper)
    assert sandbox.last("groq")["json"]["response_format"]["type"] == "json_schema"


def test_stream_with_a_schema_and_a_bad_schema_are_refused(live: str, sandbox: Sandbox) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}},
    }
    with pytest.raises(openai.BadRequestError) as streamed:
        _sdk(live).chat.completions.create(
            model="fast",
            messages=USER,
            response_format=fmt,  # type: ignore[arg-type]
            stream=True,
        )
    assert streamed.value.code == "unsupported_parameter"
    assert streamed.value.param == "stream"
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}}
    with pytest.raises(openai.BadRequestError) as invalid:
        _sdk(live).chat.completions.create(
            model="fast",
            messages=USER,
            response_format=bad,  # type: ignore[arg-type]
        )
    assert invalid.value.param == "response_format"
    assert sum(sandbox.completions(p) for p in ("groq", "gemini", "azure", "openai")) == 0


def test_json_object_mode_is_unchanged(live: str, sandbox: Sandbox) -> None:
    reply = _sdk(live).chat.completions.create(
        model="fast", messages=USER, response_format={"type": "json_object"}
    )
    assert reply.choices[0].message.content
    assert sandbox.last("groq")["json"]["response_format"] == {"type": "json_object"}
