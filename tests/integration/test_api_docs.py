"""The API docs work offline: every page asset comes from the service itself, and the OpenAPI
document says what the server enforces (bounds, real examples, the streamed answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.core.settings import Settings
from app.main import create_app
from tests.support.client import gateway_client

DOC_PAGES = ("/schema", "/schema/swagger")


class _References(HTMLParser):
    """Every URL a browser would load for the page: script src, link href, img src..."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        for name, value in attrs:
            if name in {"src", "href", "srcset", "data", "poster"} and value:
                self.urls.append((tag, value))


@pytest.fixture
async def docs() -> AsyncIterator[AsyncTestClient[Any]]:
    async with gateway_client(create_app(Settings())) as client:
        yield client


@pytest.fixture
async def openapi(docs: AsyncTestClient[Any]) -> dict[str, Any]:
    document: dict[str, Any] = (await docs.get("/schema/openapi.json")).json()
    return document


@pytest.mark.parametrize("page", DOC_PAGES)
async def test_docs_page_loads_only_the_services_own_assets(
    docs: AsyncTestClient[Any], page: str
) -> None:
    answer = await docs.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(answer.text)
    assert parser.scripts >= 2, "the Swagger UI bundle and its preset"
    assert parser.urls, "the page loads its scripts and style from somewhere"
    expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for tag, url in parser.urls:
        # Same origin: a path on this service, never another host (no CDN, no fonts).
        assert url.startswith("/"), (tag, url)
        assert not url.startswith("//"), (tag, url)
        asset = await docs.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert expected[suffix] in asset.headers["content-type"], (url, asset.headers)
        assert len(asset.content) > 1000, url
    # The bundle is Swagger UI's (5.x renders OpenAPI 3.1, the version Litestar writes).
    bundle = await docs.get(next(url for _, url in parser.urls if url.endswith("bundle.js")))
    assert b"SwaggerUIBundle" in bundle.content


async def test_only_the_pages_that_work_offline_are_offered(docs: AsyncTestClient[Any]) -> None:
    # ReDoc, RapiDoc, Elements and Scalar would load their bundles from a CDN: not served.
    for page in ("/schema/redoc", "/schema/rapidoc", "/schema/elements", "/schema/scalar"):
        assert (await docs.get(page)).status_code == 404, page
    # Only the files the page needs are served from the package, nothing else in it.
    assert (await docs.get("/schema/assets/swagger-editor-bundle.js")).status_code == 404
    assert (await docs.get("/schema/openapi.yaml")).status_code == 200


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _example_values(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for path, node in _walk(document):
        if isinstance(node, dict):
            for key in ("example", "examples"):
                if key in node and "/properties/" + key not in path + "/" + key:
                    yield f"{path}/{key}", node[key]


def test_examples_are_real_not_generated(openapi: dict[str, Any]) -> None:
    examples = list(_example_values(openapi))
    assert examples, "the document carries examples"
    for where, example in examples:
        for inner, value in _walk(example):
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert value >= 0, f"{where}{inner}: {value}"  # no "cost_usd": -4241.17
    # Each error example is an error with its own status (no "status": 5277).
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for media, content in response.get("content", {}).items():
                    for example in (content.get("examples") or {}).values():
                        value = example["value"]
                        if media == "application/problem+json":
                            assert value["status"] == int(status), (path, method, status)
                        elif int(status) >= 400:
                            assert {"message", "type", "code"} <= set(value["error"]), (
                                path,
                                status,
                            )


def test_bounds_the_server_enforces_are_in_the_document(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for body in ("CompletionBody", "ChatCompletionBody"):
        temperature = schemas[body]["properties"]["temperature"]
        assert (temperature["minimum"], temperature["maximum"]) == (0, 2), body
        messages = schemas[body]["properties"]["messages"]
        assert messages["minItems"] == 1, body
        assert "AI_MAX_MESSAGES" in messages["description"], body
    assert schemas["BatchBody"]["properties"]["papers"]["minItems"] == 1
    assert schemas["PaperIn"]["properties"]["doi"]["maxLength"] == 400
    # An array's size bound is minItems/maxItems, never minLength/maxLength (string bounds).
    for path, node in _walk(schemas):
        if isinstance(node, dict):
            options = (
                [node, *node.get("oneOf", [])] if isinstance(node.get("oneOf"), list) else [node]
            )
            kinds = {
                o.get("type")
                for o in options
                if isinstance(o, dict) and isinstance(o.get("type"), str)
            }
            if "array" in kinds and "string" not in kinds:
                assert "minLength" not in node, path
                assert "maxLength" not in node, path


def test_the_streamed_answer_and_the_handlers_are_described(openapi: dict[str, Any]) -> None:
    chat = openapi["paths"]["/v1/chat/completions"]["post"]
    stream = chat["responses"]["200"]["content"]["text/event-stream"]
    assert "chat.completion.chunk" in stream["schema"]["description"]
    assert "[DONE]" in stream["schema"]["description"]
    assert stream["example"].startswith("data: {")
    assert stream["example"].endswith("data: [DONE]\n\n")
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            assert operation.get("description", "").strip(), f"{method.upper()} {path}"
