"""Azure OpenAI: the OpenAI body, addressed by deployment, authenticated by `api-key`."""

from __future__ import annotations

from app.core.http import UpstreamClient
from app.core.settings import ProviderName
from app.modules.ai.domain import CompletionRequest, ProviderReply
from app.modules.ai.providers.base import encode_json, model_segment, send
from app.modules.ai.providers.keys import ApiKey
from app.modules.ai.providers.openai_compatible import (
    chat_payload,
    parse_chat_chunk,
    parse_chat_reply,
    status_error,
    stream_payload,
)
from app.modules.ai.providers.streaming import ProviderStream, open_stream


class AzureOpenAIAdapter:
    """`POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`.

    The `model` the service routes to is the deployment name, sent as one percent-encoded
    path segment.
    """

    name = ProviderName.AZURE
    endpoint = "deployments/chat/completions"

    def __init__(self, client: UpstreamClient, *, api_version: str) -> None:
        self._client = client
        self._params = {"api-version": api_version}

    async def complete(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderReply:
        response, body = await send(
            self._client,
            "POST",
            f"openai/deployments/{model_segment(model)}/chat/completions",
            headers={"api-key": key.secret, "content-type": "application/json"},
            params=self._params,
            content=encode_json(chat_payload(request, None)),
        )
        return parse_chat_reply(response, body, request, model)

    async def stream(self, request: CompletionRequest, model: str, key: ApiKey) -> ProviderStream:
        return await open_stream(
            self._client,
            f"openai/deployments/{model_segment(model)}/chat/completions",
            auth={"api-key": key.secret},
            params=self._params,
            payload=stream_payload(request, None),
            parse=parse_chat_chunk,
            model=model,
            status_error=status_error,
        )

    async def ping(self, key: ApiKey) -> None:
        response, body = await send(
            self._client,
            "GET",
            "openai/deployments",
            headers={"api-key": key.secret},
            params=self._params,
        )
        if response.status_code >= 300:
            raise status_error(response, body)

    async def aclose(self) -> None:
        await self._client.aclose()
