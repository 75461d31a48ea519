"""Quality and speed of the full-text heuristics on the labelled development set.

    python -m bench.fulltext_quality [--data DIR] [--repeat N] [--trafilatura]

Runs `assess_html` on every page of the set (no AI), prints one row per page and then, for the
part used for tuning and for the held-out part separately: a confusion table (true label x
predicted content type), precision and recall of "is full text", how many verdicts would go to
`review` (the heuristics unsure and no AI verdict: never a positive), a calibration table (per
confidence bucket, how many verdicts and the share right) and how many `certain` verdicts were
wrong (that must stay 0: a certain verdict skips the AI). Last, the time per page.

The set is tests/fixtures/fulltext/dev (see its README.md); `--data` points elsewhere. The
held-out part is the `split` column of labels.csv (chosen by a salted hash per label, see
`held_out_ids`); a set without that column is split by the same hash here.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import itertools
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.modules.literature.content import ContentAssessment, ContentType, assess_html

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "tests" / "fixtures" / "fulltext" / "dev"
POSITIVE_LABEL = "full_article"
LABELS = ("full_article", "abstract_only", "paywall_or_login", "not_article")
HELD_OUT_SHARE = 0.35
_SPLIT_SALT = "fulltext-dev-holdout:"
# Calibration buckets: [0.5, 0.6), ..., [0.9, 1.0]; anything under 0.5 gets its own row.
_BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)
_PREDICTED_ORDER = [t.value for t in ContentType]


@dataclass(frozen=True, slots=True)
class Page:
    id: str
    label: str
    site: str
    path: Path
    split: str = ""
    batch: str = "1"


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


def page_path(data: Path, page_id: str) -> Path:
    """`pages/<id>.html`, or `pages/<id>.html.gz` for the pages stored compressed."""
    plain = data / "pages" / f"{page_id}.html"
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def load_pages(data: Path) -> list[Page]:
    """The labelled pages of the set, in labels.csv order."""
    with (data / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return [
            Page(
                row["id"],
                row["label"],
                row.get("site") or "",
                page_path(data, row["id"]),
                (row.get("split") or "").strip(),
                (row.get("batch") or "1").strip(),
            )
            for row in csv.DictReader(handle)
        ]


def held_out_ids(pages: Iterable[Page], share: float = HELD_OUT_SHARE) -> frozenset[str]:
    """The held-out pages: the `split` column when the set has one, else `hash_split`."""
    pages = list(pages)
    if pages and all(page.split for page in pages):
        return frozenset(page.id for page in pages if page.split == "holdout")
    return hash_split(pages, share)


def hash_split(pages: Iterable[Page], share: float = HELD_OUT_SHARE) -> frozenset[str]:
    """About `share` of each label's pages of each batch, chosen by a salted hash of the id.

    Per label, so every class is represented in both parts; by hash, so the choice is the same on
    every machine and nobody picks which pages are kept aside; per batch (the pages added
    together), so adding pages never moves a page somebody tuned on into the held-out part.
    labels.csv records the result in its `split` column and a test checks it against this rule.
    """
    by_label: dict[tuple[str, str], list[str]] = {}
    for page in pages:
        by_label.setdefault((page.batch, page.label), []).append(page.id)
    chosen: set[str] = set()
    for ids in by_label.values():
        ranked = sorted(ids, key=lambda i: hashlib.sha256((_SPLIT_SALT + i).encode()).hexdigest())
        chosen.update(ranked[: max(1, round(share * len(ranked)))])
    return frozenset(chosen)


def read_html(path: Path) -> str:
    """Pages are saved as served (large ones gzipped); undecodable bytes become U+FFFD."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def is_review(assessment: ContentAssessment) -> bool:
    """Whether the service would answer `review` for this verdict when no AI verdict stands.

    Read defensively: the `review` recommendation and `needs_review` may or may not be on the
    assessment (the verification layer adds them); without them, an uncertain verdict is what
    goes to review.
    """
    recommendation = getattr(assessment, "recommendation", None)
    if str(getattr(recommendation, "value", recommendation)) == "review":
        return True
    needs_review = getattr(assessment, "needs_review", None)
    if isinstance(needs_review, bool):
        return needs_review
    return not bool(getattr(assessment, "certain", False))


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


def scores(results: Iterable[Result], review_is_negative: bool = False) -> Scores:
    """Precision and recall of `is_full_text`; with `review_is_negative`, of an accept without
    review (what the service does with no AI verdict: a `review` is never a positive)."""
    pages = tp = fp = fn = 0
    for result in results:
        pages += 1
        actual = result.page.label == POSITIVE_LABEL
        predicted = result.assessment.is_full_text
        if review_is_negative and is_review(result.assessment):
            predicted = False
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
            f"{'yes' if getattr(a, 'certain', False) else 'no':<7} {r.ms:>6.1f}  "
            f"{'holdout' if r.held_out else 'tune'}{mark}"
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


def parts(results: Sequence[Result]) -> dict[str, list[Result]]:
    """The tuning part and the held-out part, reported separately (and never pooled)."""
    return {
        "tune": [r for r in results if not r.held_out],
        "holdout": [r for r in results if r.held_out],
    }


def batch_parts(results: Sequence[Result]) -> dict[str, list[Result]]:
    """The held-out pages of each later batch on their own: pages nobody had seen, not even
    as numbers in this report, when the heuristics were last changed."""
    batches = sorted({r.page.batch for r in results if r.held_out} - {"1"})
    return {f"hold/b{b}": [r for r in results if r.held_out and r.page.batch == b] for b in batches}


def right(result: Result) -> bool:
    """Whether the verdict's yes/no on "is full text" matches the label."""
    return result.assessment.is_full_text == (result.page.label == POSITIVE_LABEL)


def print_scores(results: Sequence[Result]) -> None:
    """Precision and recall per part: of `is_full_text`, and of an accept without review."""
    print(
        f"{'part':<8} {'pages':>5} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7}"
        f"  {'review':>10}  {'P(no rev)':>9} {'R(no rev)':>9}  {'certain':>7} {'wrong':>5}"
    )
    for name, part in (parts(results) | batch_parts(results)).items():
        if not part:
            continue
        s = scores(part)
        strict = scores(part, review_is_negative=True)
        reviews = sum(is_review(r.assessment) for r in part)
        certain = [r for r in part if getattr(r.assessment, "certain", False)]
        wrong_certain = sum(not right(r) for r in certain)
        print(
            f"{name:<8} {s.pages:>5} {s.true_positives:>3} {s.false_positives:>3} "
            f"{s.false_negatives:>3} {s.precision:>9.3f} {s.recall:>7.3f}"
            f"  {reviews:>3} ({reviews / len(part):>4.0%})  {strict.precision:>9.3f} "
            f"{strict.recall:>9.3f}  {len(certain):>7} {wrong_certain:>5}"
        )
    print(
        "precision/recall: of is_full_text; review: verdicts that would go to review without an"
        " AI verdict (never a positive); P/R(no rev): review counted as a no; wrong: certain"
        " verdicts that were wrong (must be 0); hold/bN: the held-out pages of batch N alone"
    )


def calibration(results: Iterable[Result]) -> list[tuple[str, int, int]]:
    """Per confidence bucket: its name, how many verdicts fell in it, how many were right."""
    rows: list[tuple[str, int, int]] = []
    results = list(results)
    for low, high in itertools.pairwise(_BUCKETS):
        inside = [r for r in results if low <= r.assessment.confidence < high]
        if low == 0.0 and not inside:
            continue
        name = f"<{high:.1f}" if low == 0.0 else f"{low:.1f}-{min(high, 1.0):.1f}"
        rows.append((name, len(inside), sum(right(r) for r in inside)))
    return rows


def print_calibration(results: Sequence[Result]) -> None:
    """How often the verdicts at each confidence level are right, per part."""
    split = parts(results)
    header = "".join(f"  {name:>8} {'right':>6}" for name in split)
    print(f"{'confidence':<10}{header}")
    tables = {name: calibration(part) for name, part in split.items()}
    names = [row[0] for row in calibration(results)]
    for bucket in names:
        cells = ""
        for name in split:
            count, ok = next(((n, k) for b, n, k in tables[name] if b == bucket), (0, 0))
            share = f"{ok / count:.0%}" if count else "-"
            cells += f"  {count:>8} {share:>6}"
        print(f"{bucket:<10}{cells}")


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
    parser.add_argument("--repeat", type=int, default=1, help="runs per page for timing")
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
    for name, part in parts(results).items():
        print(f"\n{name} part ({len(part)} pages): true label x predicted content type")
        print_confusion(part)
    print()
    print_scores(results)
    print()
    print_calibration(results)
    print()
    print_times(results)
    if args.trafilatura:
        print_trafilatura_times(pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
