"""HTTP surface of full-text detection: one paper, a batch (JSON or NDJSON stream), and the
content verification route."""

from __future__ import annotations

import base64
import binascii
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from dishka import FromDishka
from dishka.integrations.litestar import inject
from litestar import Controller, Request, Response, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK
from pydantic_core import to_json

from app.core.auth import Caller
from app.core.problems import problem_responses
from app.core.settings import LiteratureSettings
from app.modules.literature.domain import DetectionResult, DetectOptions, Paper
from app.modules.literature.errors import ContentTooLarge, InvalidContent
from app.modules.literature.schemas import (
    BatchBody,
    BatchOut,
    BatchSummaryOut,
    DetectBody,
    ResultOut,
    VerificationOut,
    VerifyBody,
)
from app.modules.literature.service import FullTextDetectionService
from app.modules.literature.verification import ContentVerifier

NDJSON = "application/x-ndjson"
# Progress events per streamed batch (besides one result line per paper).
PROGRESS_EVENTS = 10


class LiteratureController(Controller):
    path = "/v1/fulltext"
    tags = ("fulltext",)
    security = ({"bearer": []},)

    @post("/detect", status_code=HTTP_200_OK, responses=problem_responses(400, 401, 429))
    @inject
    async def detect(
        self,
        data: JSONBody[DetectBody],
        service: FromDishka[FullTextDetectionService],
        caller: FromDishka[Caller],
    ) -> ResultOut:
        """Whether one paper's full text is available, where, and how sure we are."""
        result = await service.detect(
            data.paper.to_domain(0), data.options.to_domain(), caller=caller.id
        )
        return ResultOut.of(result)

    @post(
        "/detect/batch",
        status_code=HTTP_200_OK,
        responses={
            HTTP_200_OK: ResponseSpec(
                BatchOut,
                description="Every paper's result (or, with Accept: application/x-ndjson, one "
                "JSON event per line as results complete)",
                generate_examples=False,  # the models carry real examples
            ),
            **problem_responses(400, 401, 413, 429),
        },
    )
    @inject
    async def detect_batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BatchBody],
        service: FromDishka[FullTextDetectionService],
        caller: FromDishka[Caller],
    ) -> Response[BatchOut] | Stream:
        """Many papers at once (up to LITERATURE_BATCH_MAX_SIZE). With
        `Accept: application/x-ndjson` results stream as they complete, one JSON object per
        line: `{"type": "result", "index", "result"}`, `{"type": "progress", "completed",
        "total"}` now and then, and a final `{"type": "summary", ...}`."""
        papers = [paper.to_domain(index) for index, paper in enumerate(data.papers)]
        options = data.options.to_domain()
        if NDJSON in request.headers.get("accept", ""):
            return Stream(
                _ndjson(service, papers, options, caller.id),
                media_type=NDJSON,
                headers={"cache-control": "no-cache"},
            )
        started = time.perf_counter()
        results = await service.detect_batch(papers, options, caller=caller.id)
        # (A Response, not a bare model: with a Response return type Litestar leaves the
        # media type to each response, so the NDJSON stream keeps its own.)
        return Response(
            BatchOut(
                results=[ResultOut.of(r) for r in results],
                summary=_summary(results, time.perf_counter() - started),
            )
        )

    @post("/verify", status_code=HTTP_200_OK, responses=problem_responses(400, 401, 413, 429))
    @inject
    async def verify(
        self,
        data: JSONBody[VerifyBody],
        verifier: FromDishka[ContentVerifier],
        settings: FromDishka[LiteratureSettings],
        caller: FromDishka[Caller],
    ) -> VerificationOut:
        """Is this scraped content the paper's full text, or an abstract, a paywall, a login
        or a metadata page? Heuristics first; the AI only when they are unsure. A PDF is sent
        as base64 with `content_type: "pdf"`."""
        if len(data.content) > settings.verify_max_chars:
            raise ContentTooLarge(
                f"the content has {len(data.content)} characters; the limit is "
                f"{settings.verify_max_chars}"
            )
        content: str | bytes = data.content
        if data.content_type == "pdf":
            content = _pdf_bytes(data.content, settings.max_pdf_bytes)
        verification = await verifier.verify(
            content,
            content_type=data.content_type,
            title=data.paper.title,
            doi=data.paper.doi,
            allow_ai=not data.skip_ai,
            caller=caller.id,
        )
        return VerificationOut.of(verification)


# A PDF's header may follow some leading junk; readers look for it in the first kilobyte.
_PDF_HEADER_WINDOW = 1024


def _pdf_bytes(content: str, max_bytes: int) -> bytes:
    """The PDF sent as base64 (standard alphabet, padding required; whitespace and line breaks
    are allowed, as base64 tools wrap lines), or a 400 that says what is wrong."""
    compact = "".join(content.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidContent(
            "content_type pdf needs the PDF's bytes in base64 (standard alphabet A-Z a-z 0-9 + /, "
            "with = padding); the content is not valid base64"
        ) from None
    if len(data) > max_bytes:
        raise ContentTooLarge(f"the PDF has {len(data)} bytes; the limit is {max_bytes}")
    if b"%PDF-" not in data[:_PDF_HEADER_WINDOW]:
        raise InvalidContent(
            "content_type pdf: the base64 content decodes, but not to a PDF (no %PDF- header)"
        )
    return data


async def _ndjson(
    service: FullTextDetectionService,
    papers: Sequence[Paper],
    options: DetectOptions,
    caller: str,
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    total = len(papers)
    every = max(1, total // PROGRESS_EVENTS)
    results: list[DetectionResult] = []
    async for index, result in service.stream_batch(papers, options, caller=caller):
        results.append(result)
        line = {"type": "result", "index": index, "result": ResultOut.of(result).model_dump()}
        yield _line(line)
        if len(results) % every == 0 or len(results) == total:
            available = sum(r.is_available for r in results)
            yield _line(
                {
                    "type": "progress",
                    "completed": len(results),
                    "total": total,
                    "available": available,
                }
            )
    summary = _summary(results, time.perf_counter() - started)
    yield _line({"type": "summary", **summary.model_dump()})


def _line(event: dict[str, Any]) -> bytes:
    return to_json(event) + b"\n"


def _summary(results: Sequence[DetectionResult], elapsed_s: float) -> BatchSummaryOut:
    tiers = Counter(str(r.tier) if r.is_available and r.tier else "none" for r in results)
    return BatchSummaryOut(
        total=len(results),
        available=sum(r.is_available for r in results),
        by_tier=dict(sorted(tiers.items())),
        errors=sum(r.error is not None for r in results),
        duration_ms=round(elapsed_s * 1000, 3),
    )


__all__ = ["LiteratureController"]
