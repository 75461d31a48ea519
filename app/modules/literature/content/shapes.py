"""Page shapes that are not articles: catalogue records and lists of items.

A repository or library record ("Title: ... Author(s): ... Abstract: ...") is about one paper but
holds at most its abstract; a search result, table of contents or issue page lists many papers,
each with its own "Abstract | PDF" links. Both are recognised by words a reader sees, in any of
the layouts (tables, definition lists, divs) sites use for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.modules.literature.content.markers import words

# Field labels of bibliographic records (DSpace, EPrints, VuFind, OJS, library catalogues), in
# English and the commonest other repository languages.
_LABEL_WORDS = frozenset(
    {
        "title",
        "titles",
        "author",
        "authors",
        "creator",
        "creators",
        "contributor",
        "contributors",
        "advisor",
        "supervisor",
        "date",
        "issued",
        "date issued",
        "issue date",
        "main author",
        "other authors",
        "year",
        "published",
        "publisher",
        "journal",
        "volume",
        "issue",
        "pages",
        "doi",
        "isbn",
        "issn",
        "uri",
        "url",
        "identifier",
        "keywords",
        "subject",
        "subjects",
        "language",
        "type",
        "format",
        "rights",
        "license",
        "collection",
        "collections",
        "department",
        "institution",
        "degree",
        "citation",
        "description",
        "abstract",
        "files",
        "titel",
        "autor",
        "verfasser",
        "schlagwörter",
        "sprache",
        "jahr",
        "verlag",
        "person",
        "título",
        "autores",
        "resumo",
        "assunto",
        "orientador",
        "idioma",
        "editora",
        "auteur",
        "titre",
        "résumé",
        "langue",
        "éditeur",
    }
)
# Accented and plain spellings both occur ("título", "titulo"), so the set holds both.
_RECORD_LABELS = _LABEL_WORDS | frozenset(" ".join(words(label)) for label in _LABEL_WORDS)
_LABEL = re.compile(r"^([^\W\d][\w ./()&-]{0,40}?)\s*:")
_MAX_LABEL_LINE = 160
_MAX_LINK_ROW = 80
_LINK_SEPARATORS = re.compile(r"[|\u00b7\u2022/]")
_MAX_BARE_LABEL = 30
_LABEL_PARTS = re.compile(r"[/,&]| and ")
# A DSpace "full item record" labels its rows with Dublin Core names ("dc.contributor.author").
_DC_LABEL = re.compile(r"^(?:dc|dcterms)\.[a-z]+(?:\.[a-z]+)*$")

# Link words repeated once per item on list pages.
_ITEM_LINKS = frozenset(
    {"abstract", "pdf", "full text", "html", "full text html", "download pdf", "view", "read more"}
)


def record_fields(lines: Sequence[str]) -> int:
    """Distinct bibliographic field labels shown as "Label:" or as a label on its own line."""
    seen: set[str] = set()
    for line in lines:
        if len(line) > _MAX_LABEL_LINE:
            continue
        if len(line) <= _MAX_BARE_LABEL:
            label = line.rstrip(" :")
        else:
            match = _LABEL.match(line) if ":" in line[: _MAX_BARE_LABEL + 12] else None
            if match is None:
                continue
            label = match.group(1)
        label = label.casefold()
        if _DC_LABEL.match(label):
            seen.add(label)
            continue
        if label in _RECORD_LABELS:
            seen.add(label)
            continue
        for part in _LABEL_PARTS.split(label):
            name = " ".join(part.split())
            if name in _RECORD_LABELS:
                seen.add(name)
    return len(seen)


def item_links(lines: Sequence[str]) -> int:
    """How many per-item link words of a list page ("Abstract | Full text | PDF") there are."""
    count = 0
    for line in lines:
        if len(line) > _MAX_LINK_ROW:
            continue
        for part in _LINK_SEPARATORS.split(line.casefold()):
            count += part.strip(" []()") in _ITEM_LINKS
    return count
