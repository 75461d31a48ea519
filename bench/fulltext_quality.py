"""Quality and speed of the full-text heuristics on the labelled development set.

    python -m bench.fulltext_quality [--data DIR] [--repeat N] [--trafilatura]

Runs `assess_html` on every page of the set (no AI), prints one row per page, a confusion table
(true label x predicted content type), precision and recall of "is full text" on the whole set,
on the part used for tuning and on the held-out part, how many verdicts were certain, and the
time per page. The held-out part is chosen by hashing page ids, per label, so it is the same on
every machine and was never looked at while the heuristics were tuned.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.modules.literature.content import ContentAssessment, ContentType, assess_html

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fulltext-dev"
POSITIVE_LABEL = "full_article"
HELD_OUT_SHARE = 0.3
_SPLIT_SALT = "fulltext-holdout:"
_PREDICTED_ORDER = [t.value for t in ContentType]


@dataclass(frozen=True, slots=True)
class Page:
    id: str
    label: str
    site: str
    path: Path


@dataclass(frozen=True, slots=True)
class Result:
    page: Page
    held_out: bool
    assessment: ContentAssessment
    ms: float


@dataclass(frozen=True, slots=True)
class Scores:
    """Precision and recall of "is full text" over some pages."""

    pages: int
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0


def load_pages(data: Path) -> list[Page]:
    """The labelled pages of the set, in labels.csv order."""
    with (data / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return [
            Page(row["id"], row["label"], row.get("site", ""), data / "pages" / f"{row['id']}.html")
            for row in csv.DictReader(handle)
        ]


def held_out_ids(pages: Iterable[Page], share: float = HELD_OUT_SHARE) -> frozenset[str]:
    """About `share` of each label's pages, chosen by a salted hash of the id.

    Per label, so every class is represented in both parts; by hash, so adding a page to the
    set moves few others between parts.
    """
    by_label: dict[str, list[str]] = {}
    for page in pages:
        by_label.setdefault(page.label, []).append(page.id)
    chosen: set[str] = set()
    for ids in by_label.values():
        ranked = sorted(ids, key=lambda i: hashlib.sha256((_SPLIT_SALT + i).encode()).hexdigest())
        chosen.update(ranked[: max(1, round(share * len(ranked)))])
    return frozenset(chosen)


def read_html(path: Path) -> str:
    """Pages are saved as served; undecodable bytes become U+FFFD rather than failing."""
    return path.read_bytes().decode("utf-8", errors="replace")


def run(pages: Sequence[Page], repeat: int = 1) -> list[Result]:
    """Assess every page; the time is the median of `repeat` runs (the first run included)."""
    held = held_out_ids(pages)
    results: list[Result] = []
    for page in pages:
        html = read_html(page.path)
        times: list[float] = []
        assessment: ContentAssessment | None = None
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            assessment = assess_html(html)
            times.append((time.perf_counter() - start) * 1000)
        assert assessment is not None
        results.append(Result(page, page.id in held, assessment, statistics.median(times)))
    return results


def scores(results: Iterable[Result]) -> Scores:
    pages = tp = fp = fn = 0
    for result in results:
        pages += 1
        actual = result.page.label == POSITIVE_LABEL
        predicted = result.assessment.is_full_text
        tp += actual and predicted
        fp += predicted and not actual
        fn += actual and not predicted
    return Scores(pages, tp, fp, fn)


def print_pages(results: Sequence[Result]) -> None:
    print(
        f"{'id':<28} {'label':<17} {'predicted':<14} {'full':<5} {'conf':>5} {'certain':<7} "
        f"{'ms':>6}  split"
    )
    for r in results:
        a = r.assessment
        mark = "" if a.is_full_text == (r.page.label == POSITIVE_LABEL) else "  <-- wrong"
        print(
            f"{r.page.id:<28} {r.page.label:<17} {a.content_type.value:<14} "
            f"{'yes' if a.is_full_text else 'no':<5} {a.confidence:>5.2f} "
            f"{'yes' if a.certain else 'no':<7} {r.ms:>6.1f}  "
            f"{'held-out' if r.held_out else 'tuning'}{mark}"
        )


def print_confusion(results: Sequence[Result]) -> None:
    counts = Counter((r.page.label, r.assessment.content_type.value) for r in results)
    labels = sorted({r.page.label for r in results})
    columns = [c for c in _PREDICTED_ORDER if any(counts[(label, c)] for label in labels)]
    width = max(len(c) for c in columns) + 1
    corner = "true \\ predicted"
    print(f"{corner:<17}" + "".join(f"{c:>{width}}" for c in columns))
    for label in labels:
        row = "".join(f"{counts[(label, c)] or '.':>{width}}" for c in columns)
        print(f"{label:<17}{row}")


def print_scores(results: Sequence[Result]) -> None:
    parts = {
        "all": list(results),
        "tuning": [r for r in results if not r.held_out],
        "held-out": [r for r in results if r.held_out],
    }
    print(f"{'part':<9} {'pages':>5} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7}")
    for name, part in parts.items():
        s = scores(part)
        print(
            f"{name:<9} {s.pages:>5} {s.true_positives:>3} {s.false_positives:>3} "
            f"{s.false_negatives:>3} {s.precision:>9.3f} {s.recall:>7.3f}"
        )
    certain = [r for r in results if r.assessment.certain]
    wrong_certain = [
        r for r in certain if r.assessment.is_full_text != (r.page.label == POSITIVE_LABEL)
    ]
    print(
        f"certain: {len(certain)}/{len(results)} pages (AI not needed); "
        f"wrong among certain: {len(wrong_certain)}"
    )


def print_times(results: Sequence[Result]) -> None:
    times = [r.ms for r in results]
    slowest = max(results, key=lambda r: r.ms)
    print(
        f"time per page: mean {statistics.mean(times):.1f} ms, median "
        f"{statistics.median(times):.1f} ms, max {slowest.ms:.1f} ms ({slowest.page.id}, "
        f"{slowest.page.path.stat().st_size // 1024} KiB)"
    )


def print_trafilatura_times(pages: Sequence[Page]) -> None:
    """What trafilatura's extractor alone would cost per page, for comparison."""
    import trafilatura  # only for this comparison; the heuristics do not use it

    times: list[float] = []
    for page in pages:
        html = read_html(page.path)
        start = time.perf_counter()
        trafilatura.extract(html)
        times.append((time.perf_counter() - start) * 1000)
    print(
        f"trafilatura.extract alone: mean {statistics.mean(times):.1f} ms, "
        f"max {max(times):.1f} ms per page"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the labelled set")
    parser.add_argument("--repeat", type=int, default=3, help="runs per page for timing")
    parser.add_argument(
        "--trafilatura", action="store_true", help="also time trafilatura.extract per page"
    )
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(f"no labelled set at {args.data} (labels.csv missing)", file=sys.stderr)
        return 0
    pages = load_pages(args.data)
    results = run(pages, repeat=args.repeat)
    print_pages(results)
    print()
    print_confusion(results)
    print()
    print_scores(results)
    print_times(results)
    if args.trafilatura:
        print_trafilatura_times(pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
