"""Azure OpenAI wire format: OpenAI bodies plus content-filter annotations.

Differences that matter to a gateway: the ``api-key`` header, deployments in the
path, a required ``api-version`` query, errors shaped ``{"error": {"code",
"message"}}``, ``retry-after-ms`` on 429, and a first stream chunk that carries
only ``prompt_filter_results`` with an empty ``choices`` list.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .common import (
    CallInfo,
    ChatRequest,
    Reply,
    Usage,
    fmt_seconds,
    json_reply,
    reason,
)
from .openai import OpenAIDialect

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..catalog import Catalog, Provider

_CONTENT_FILTER_OK: Final = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


class AzureDialect(OpenAIDialect):
    """Azure OpenAI: ``api-key`` header, deployments in the path, ``{"error":{"code"...}}``."""

    provider: ClassVar[Provider] = "azure"
    pretty: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False

    def extract_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("api-key") or None

    def redact_headers(self) -> tuple[str, ...]:
        return ("api-key",)

    def headers(self, info: CallInfo) -> dict[str, str]:
        rate = info.rate
        remaining = rate.remaining if rate else 999
        return {
            "apim-request-id": str(uuid.UUID(info.request_id)),
            "x-request-id": str(uuid.UUID(info.request_id)),
            "x-ms-region": "Sandbox Region",
            "x-ms-rai-invoked": "true",
            "azureml-model-session": "d001-sandbox",
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-remaining-tokens": "149990",
        }

    def completion_body(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> dict[str, Any]:
        body = super().completion_body(req, content, usage, served_model, info)
        body["choices"][0]["content_filter_results"] = _CONTENT_FILTER_OK
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_OK}
        ]
        return body

    def stream_events(
        self, req: ChatRequest, content: str, usage: Usage, served_model: str, info: CallInfo
    ) -> list[dict[str, Any]]:
        # Real Azure opens with a filter-results-only chunk: no choices, empty model.
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_OK}
            ],
        }
        return [first, *super().stream_events(req, content, usage, served_model, info)]

    def model_obj(self, name: str) -> dict[str, Any]:
        return name  # type: ignore[return-value]  # unused: Azure lists deployments

    def deployment_obj(self, name: str, model: str) -> dict[str, Any]:
        return {
            "scale_settings": {"scale_type": "standard"},
            "model": model,
            "owner": "organization-owner",
            "id": name,
            "status": "succeeded",
            "created_at": 1700000000,
            "updated_at": 1700000000,
            "object": "deployment",
        }

    def models(self, catalog: Catalog, info: CallInfo) -> Reply:
        data = [self.deployment_obj(d, m) for d, m in catalog.azure_deployments.items()]
        return json_reply(200, {"data": data, "object": "list"}, self.headers(info))

    def model(self, catalog: Catalog, name: str, info: CallInfo) -> Reply:
        if name not in catalog.azure_deployments:
            return self.model_not_found(name)
        return json_reply(
            200, self.deployment_obj(name, catalog.azure_deployments[name]), self.headers(info)
        )

    def empty_models(self, info: CallInfo) -> Reply:
        return json_reply(200, {"data": [], "object": "list"}, self.headers(info))

    def azure_error(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return json_reply(status, {"error": {"code": code, "message": message}}, headers)

    def invalid_key(self, key: str | None) -> Reply:
        return self.azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to"
            " provide a valid key for an active subscription and use a correct regional API"
            " endpoint for your resource.",
        )

    def resource_not_found(self) -> Reply:
        return self.azure_error(404, "404", "Resource not found")

    def model_not_found(self, model: str) -> Reply:
        return self.azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment"
            " within the last 5 minutes, please wait a moment and try again.",
        )

    def decommissioned(self, model: str) -> Reply:
        # Azure has no distinct "retired" error: a retired model's deployment is gone.
        return self.model_not_found(model)

    def rate_limited(self, info: CallInfo, retry_after: float, limit: int) -> Reply:
        seconds = fmt_seconds(retry_after)
        message = (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version"
            f" {info.api_version or '2024-10-21'} have exceeded call rate limit of your current"
            f" OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go here:"
            " https://aka.ms/oai/quotaincrease if you would like to further increase the"
            " default rate limit."
        )
        headers = {
            **self.headers(info),
            "retry-after": seconds,
            "retry-after-ms": str(int(retry_after * 1000)),
            "x-ratelimit-remaining-requests": "0",
        }
        return self.azure_error(429, "429", message, headers)

    _AZURE_SERVER: ClassVar[dict[int, tuple[str, str]]] = {
        500: (
            "InternalServerError",
            "The server had an error while processing your request. Sorry about that!",
        ),
        502: ("BadGateway", "Bad gateway."),
        503: (
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
        ),
        504: ("Timeout", "The operation was timeout."),
    }

    def server_error(self, status: int, retry_after: float | None, info: CallInfo) -> Reply:
        if status == 429:
            return self.rate_limited(info, retry_after if retry_after is not None else 1.0, 30)
        headers = {"apim-request-id": str(uuid.UUID(info.request_id))}
        if retry_after is not None and status == 503:
            headers["retry-after"] = fmt_seconds(retry_after)
            headers["retry-after-ms"] = str(int(retry_after * 1000))
        code, message = self._AZURE_SERVER.get(status, (str(status), reason(status)))
        return self.azure_error(status, code, message, headers)

    def route_not_found(self, method: str, path: str) -> Reply:
        return self.resource_not_found()
