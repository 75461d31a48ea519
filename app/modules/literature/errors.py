"""The literature module's errors (see app.core.errors for the tree and its HTTP mapping).

GatewayError
├── InvalidRequest (400)       bad DOI/PMCID/URL, no identifier at all (pydantic, per field)
│   └── InvalidContent         /verify content_type pdf whose content is not base64 of a PDF
└── PayloadTooLarge (413)
    ├── BatchTooLarge          more papers than LITERATURE_BATCH_MAX_SIZE
    └── ContentTooLarge        /verify content above LITERATURE_VERIFY_MAX_CHARS

Upstream failures are never errors here: a publisher that is down, a refused URL or an AI that
cannot answer are part of a detection *result*, not a failed request.
"""

from __future__ import annotations

from app.core.errors import InvalidRequest, PayloadTooLarge


class InvalidContent(InvalidRequest):
    slug = "invalid-content"
    title = "Invalid content"


class BatchTooLarge(PayloadTooLarge):
    slug = "batch-too-large"
    title = "Batch too large"


class ContentTooLarge(PayloadTooLarge):
    slug = "content-too-large"
    title = "Content too large"
