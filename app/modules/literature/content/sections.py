"""Section headings and reference lists, read from the main text as a list of blocks (lines).

Publishers mark headings in many ways (`<h2>`, `<p><strong>`, a styled `<div>`, a numbered line in
a PDF), so headings are recognised by their words, not their tags: a block whose whole text is a
known section name, optionally numbered, is a heading. Body sections only count as evidence of a
full text when prose follows them, because tables of contents, "jump to" menus and structured
abstracts also list the words Introduction, Methods and Results.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

# Words (English plus the commonest other publishing languages) that name a canonical section.
# A heading such as "Materials and Methods" is split on "and"/"&" and every part must be known.
_SECTION_WORDS: dict[str, str] = {
    "abstract": "abstract",
    "summary": "summary",  # an abstract in some journals, a chapter recap in manuals and books
    "synopsis": "summary",
    "resumo": "abstract",
    "resumen": "abstract",
    "zusammenfassung": "abstract",
    "introduction": "introduction",
    "background": "introduction",
    "einleitung": "introduction",
    "introdução": "introduction",
    "introduccion": "introduction",
    "introducción": "introduction",
    "methods": "methods",
    "method": "methods",
    "materials": "methods",
    "material": "methods",
    "methodology": "methods",
    "experimental": "methods",
    "experimental section": "methods",
    "experimental procedures": "methods",
    "experimental methods": "methods",
    "study design": "methods",
    "methoden": "methods",
    "métodos": "methods",
    "metodos": "methods",
    "materiais": "methods",
    "results": "results",
    "findings": "results",
    "ergebnisse": "results",
    "resultados": "results",
    "résultats": "results",
    "discussion": "discussion",
    "general discussion": "discussion",
    "diskussion": "discussion",
    "discussão": "discussion",
    "discusión": "discussion",
    "conclusion": "conclusion",
    "conclusions": "conclusion",
    "concluding remarks": "conclusion",
    "conclusions and future work": "conclusion",
    "outlook": "conclusion",
    "fazit": "conclusion",
    "conclusão": "conclusion",
    "conclusiones": "conclusion",
    "references": "references",
    "reference": "references",
    "reference list": "references",
    "bibliography": "references",
    "literature cited": "references",
    "literature": "references",
    "works cited": "references",
    "cited literature": "references",
    "notes": "references",
    "literatur": "references",
    "literaturverzeichnis": "references",
    "referências": "references",
    "referencias": "references",
    "bibliografía": "references",
    "références": "references",
    "acknowledgements": "acknowledgements",
    "acknowledgments": "acknowledgements",
    "acknowledgement": "acknowledgements",
    "acknowledgment": "acknowledgements",
    "danksagung": "acknowledgements",
    "agradecimentos": "acknowledgements",
    "keywords": "keywords",
    "key words": "keywords",
    "palavras-chave": "keywords",
    "schlüsselwörter": "keywords",
}

# Words that name a section only next to a known one: "Patients and Methods", not "Subjects:".
_PARTNER_WORDS: dict[str, str] = {
    "patients": "methods",
    "subjects": "methods",
    "participants": "methods",
    "data": "methods",
    "study area": "methods",
    "future work": "conclusion",
    "future directions": "conclusion",
    "implications": "discussion",
    "limitations": "discussion",
}

BODY_SECTIONS = frozenset({"introduction", "methods", "results", "discussion", "conclusion"})

_NUMBERING = re.compile(r"^(?:(?:\d+|[ivx]+|[a-h])(?:\.\d+)*[.):]?\s+)")
# "References (63)", "Cited by (12)": the count some sites print after a heading.
_COUNT = re.compile(r"\s*[(\[]\d{1,5}[)\]]$")
_NOT_WORDS = re.compile(r"[^\w\s&'’-]+")
_JOINERS = re.compile(r"\s+(?:and|&|und|e|y|et)\s+|\s*,\s*")
MAX_HEADING_CHARS = 60
_MAX_HEADING_SPACES = 8

_YEAR = re.compile(r"\b(?:1[89]\d\d|20\d\d)[a-z]?\b")
_DOI = re.compile(r"\b10\.\d{4,9}/\S+")
_REF_LINE_MIN_CHARS = 30
_REF_SCAN_LINES = 3000
_MAX_ENTRY_CHARS = 700
# This many blocks this long in a row that are not entries mean the reference list has ended.
_PROSE_BREAK_CHARS = 200
_PROSE_BREAK_RUN = 3
_INITIALS = re.compile(r"\b[A-Z]\.(?:[ -]?[A-Z]\.)*")
_ENTRY_NUMBER = re.compile(r"^(?:\[\d{1,4}\]|\d{1,4}\.)\s")
_VOLUME = re.compile(
    r"\b\d{1,6}\s*\((?:1[89]|20)\d\d[a-z]?\)"  # 109, 11414 (2005)
    r"|\b\d{1,4}\s*\(\d{1,3}\)\s*[:,]"  # 12(3): 45
    r"|\((?:1[89]|20)\d\d[a-z]?\)[.,;:]?$"  # ... (2005).
    r"|\b\d{1,4},\s*[A-Z]?\d{1,6}\b"  # Phys. Rev. B 85, 195318
)
_PAGES = re.compile(r"\b\d{1,5}\s*[-\u2013]\s*\d{1,5}\b")

# A body section is "substantive" when enough text follows it before the next known heading:
# two paragraphs and a few hundred words, or one very long block. A structured abstract's parts
# ("Background", "Methods", "Results") are one short paragraph each and stay below this.
SUBSTANTIVE_SECTION_CHARS = 700
_SUBSTANTIVE_PARAGRAPHS = 2
_SUBSTANTIVE_SINGLE_BLOCK_CHARS = 1500
_PARAGRAPH_CHARS = 80
_MAX_ABSTRACT_CHARS = 6_000


def heading_sections(line: str) -> tuple[str, ...]:
    """The canonical sections a block names if the block is a heading, else ()."""
    if len(line) > MAX_HEADING_CHARS + 12 or line.count(" ") > _MAX_HEADING_SPACES:
        return ()
    return _heading_sections(line)


@functools.lru_cache(maxsize=4096)
def _heading_sections(line: str) -> tuple[str, ...]:
    text = _NUMBERING.sub("", _COUNT.sub("", line.casefold().strip())).strip(" .:")
    text = _NOT_WORDS.sub(" ", text)
    text = " ".join(text.split())
    if not text or len(text) > MAX_HEADING_CHARS:
        return ()
    whole = _SECTION_WORDS.get(text)
    if whole is not None:
        return (whole,)
    parts = [part for part in _JOINERS.split(text) if part]
    if len(parts) < 2:
        return ()
    names = [_SECTION_WORDS.get(part) or _PARTNER_WORDS.get(part) for part in parts]
    if any(name is None for name in names) or not any(part in _SECTION_WORDS for part in parts):
        return ()
    return tuple(dict.fromkeys(name for name in names if name is not None))


@dataclass(frozen=True, slots=True)
class SectionScan:
    """Headings found in the blocks and how much text each body section holds."""

    found: tuple[str, ...]  # every canonical section named by some heading, in first-seen order
    substantive: tuple[str, ...]  # body sections followed by enough text to be real sections
    body_chars: int  # text under body-section headings, before the references
    abstract_chars: int  # size of the abstract, if an "Abstract" heading precedes the body
    reference_entries: int  # entries that look like citations after a references heading
    reference_blocks: range  # the blocks of the reference list counted (empty if none)


def scan_sections(lines: Sequence[str]) -> SectionScan:
    """Find headings, measure the text under each body section and count reference entries."""
    headings = [(index, heading_sections(line)) for index, line in enumerate(lines)]
    marks = [(index, names) for index, names in headings if names]
    found: dict[str, None] = {}
    substantive: dict[str, None] = {}
    body_chars = abstract_chars = 0
    for position, (index, names) in enumerate(marks):
        found.update(dict.fromkeys(names))
        end = marks[position + 1][0] if position + 1 < len(marks) else len(lines)
        size = sum(len(lines[i]) for i in range(index + 1, end))
        if "abstract" in names and not substantive:
            abstract_chars = max(abstract_chars, _abstract_size(lines[index + 1 : end], size))
        if BODY_SECTIONS.intersection(names):
            body_chars += size
            if _substantive(lines[index + 1 : end], size):
                substantive.update(dict.fromkeys(n for n in names if n in BODY_SECTIONS))
    entries, blocks = _count_references(lines, marks)
    return SectionScan(
        found=tuple(found),
        substantive=tuple(substantive),
        body_chars=body_chars,
        abstract_chars=abstract_chars,
        reference_entries=entries,
        reference_blocks=blocks,
    )


def _abstract_size(section: Sequence[str], size: int) -> int:
    """An abstract is a paragraph or a few; when more text runs on under the heading (a landing
    page's other metadata), only its first paragraph is the abstract."""
    if size <= _MAX_ABSTRACT_CHARS:
        return size
    first = next((line for line in section if len(line) >= _PARAGRAPH_CHARS), "")
    return len(first) if len(first) <= _MAX_ABSTRACT_CHARS else 0


def _substantive(section: Sequence[str], size: int) -> bool:
    if size >= _SUBSTANTIVE_SINGLE_BLOCK_CHARS:
        return True
    paragraphs = sum(1 for line in section if len(line) >= _PARAGRAPH_CHARS)
    return size >= SUBSTANTIVE_SECTION_CHARS and paragraphs >= _SUBSTANTIVE_PARAGRAPHS


def _count_references(
    lines: Sequence[str], marks: Sequence[tuple[int, tuple[str, ...]]]
) -> tuple[int, range]:
    """Entries under the references heading that lists the most of them, and their blocks.

    An entry is a block of some length holding a year or a DOI. The list ends at the next
    body-section heading or where prose resumes, so a "References" entry in an outline near the
    top of a page does not swallow the article below it; on a tie the later heading wins.
    """
    best, best_blocks = 0, range(0)
    for position, (index, names) in enumerate(marks):
        if "references" not in names:
            continue
        stop = min(len(lines), index + 1 + _REF_SCAN_LINES)
        for later, later_names in marks[position + 1 :]:
            if BODY_SECTIONS.intersection(later_names) or "abstract" in later_names:
                stop = min(stop, later)
                break
        count, end = _entries_until_prose(lines, index + 1, stop)
        if count >= best and count:
            best, best_blocks = count, range(index + 1, end)
    return best, best_blocks


def _entries_until_prose(lines: Sequence[str], start: int, stop: int) -> tuple[int, int]:
    """Count entries from `start` until a few paragraphs in a row are not entries.

    One long non-entry block is not enough to end the list: some sites split an entry into an
    "Authors: Title" block and a "Journal Year" block, and author lists can be long.
    """
    count = prose_run = 0
    for index in range(start, stop):
        line = lines[index]
        if is_reference_entry(line):
            count += 1
            prose_run = 0
        elif len(line) >= _PROSE_BREAK_CHARS:
            prose_run += 1
            if prose_run >= _PROSE_BREAK_RUN:
                return count, index - prose_run + 1
    return count, stop


def looks_like_citation(line: str) -> bool:
    """Whether a block is a bibliography entry by its own shape, wherever it stands.

    Needs a year or DOI plus two of: author initials, "et al", an entry number, volume/page
    numbers, a DOI. Paragraphs of prose cite years too, but rarely show two of these at once and
    are usually longer than any single entry.
    """
    if len(line) < _REF_LINE_MIN_CHARS or len(line) > _MAX_ENTRY_CHARS:
        return False
    doi = _DOI.search(line) is not None
    if not doi and _YEAR.search(line) is None:
        return False
    score = (
        int(len(_INITIALS.findall(line)) >= 2)
        + int("et al" in line)
        + int(_ENTRY_NUMBER.match(line) is not None)
        + int(_VOLUME.search(line) is not None or _PAGES.search(line) is not None)
        + int(doi)
    )
    return score >= 2


def longest_citation_run(lines: Sequence[str], citations: Sequence[bool]) -> int:
    """The longest run of citation-shaped blocks: a reference list that has no heading.

    `citations` holds `looks_like_citation` of each line, computed once by the caller.
    Short blocks between entries (labels like "1.", "CrossRef", "Google Scholar") and bare links
    (an entry's DOI on its own line) do not break a run; a block of prose does.
    """
    best = run = 0
    for line, citation in zip(lines, citations, strict=True):
        if citation:
            run += 1
            best = max(best, run)
        elif len(line) >= _REF_LINE_MIN_CHARS and " " in line:
            run = 0
    return best


def is_reference_entry(line: str) -> bool:
    """Whether a block looks like one bibliography entry (or a wrapped part of one)."""
    if len(line) < _REF_LINE_MIN_CHARS or len(line) > 2000:
        return False
    return bool(_YEAR.search(line) or _DOI.search(line))
