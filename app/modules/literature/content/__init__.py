"""Heuristics that decide whether a fetched page or document is a paper's full text.

They run before any AI model: fast, pure, and explicit about how sure they are (`certain`), so
the model is only consulted for the pages the heuristics cannot settle. See `decide` for how the
evidence is weighed and `dom` for how a page is read.
"""

from app.modules.literature.content.api import (
    assess_html,
    assess_pdf_bytes,
    assess_text,
    extract_text,
)
from app.modules.literature.content.model import ContentAssessment, ContentType, Recommendation

__all__ = [
    "ContentAssessment",
    "ContentType",
    "Recommendation",
    "assess_html",
    "assess_pdf_bytes",
    "assess_text",
    "extract_text",
]
