"""Deterministic article text: the same paper always reads the same, on every page and PDF.

The prose is generated from sentence templates seeded by the paper's key, with the structure
real articles have (abstract, introduction, methods, results, discussion, conclusions,
acknowledgements, 25-40 numbered references cited in the text), so the gateway's heuristics
meet what they meet on a publisher's site. ASCII only, so the PDF writer needs no font work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_TOPICS = (
    ("soil microbial communities", "16S rRNA amplicon sequencing", "nitrogen fixation"),
    ("coral reef resilience", "long-term photo-quadrat surveys", "thermal tolerance"),
    ("antibiotic resistance in hospital wastewater", "metagenomic sequencing", "gene transfer"),
    ("sleep duration in adolescents", "wrist-worn actigraphy", "academic performance"),
    ("urban heat islands", "satellite land-surface temperature", "tree canopy cover"),
    ("protein folding intermediates", "hydrogen-deuterium exchange", "aggregation"),
    ("pollinator decline", "pan-trap sampling", "flowering phenology"),
    ("gut microbiota and metabolism", "shotgun metagenomics", "insulin sensitivity"),
    ("glacier mass balance", "airborne laser altimetry", "meltwater runoff"),
    ("working memory training", "randomised controlled designs", "transfer effects"),
)

_INTRO = (
    "Research on {topic} has expanded rapidly over the past two decades [{c1}].",
    "Despite this progress, the mechanisms linking {topic} to {outcome} remain poorly "
    "understood [{c2}].",
    "Previous studies relied mostly on cross-sectional data, which limits causal "
    "interpretation [{c3}].",
    "Several authors have argued that {method} offers a more direct view of these "
    "processes [{c1}, {c2}].",
    "However, the sample sizes of earlier work were small and the effects reported were "
    "heterogeneous across sites [{c3}].",
    "Here we address this gap by combining {method} with a longitudinal design spanning "
    "{years} years.",
    "We hypothesised that {outcome} would vary systematically with the intensity of "
    "exposure, and that this relationship would persist after adjustment for confounders.",
    "Understanding this relationship matters for both theory and practice, because "
    "management decisions are currently made without robust evidence [{c2}].",
)
_METHODS = (
    "We recruited {n} participants (or sampling units) from {sites} independent sites "
    "between {y1} and {y2}.",
    "All samples were processed within {hours} hours of collection using a standardised "
    "protocol described previously [{c1}].",
    "Data were collected by {method}, with duplicate measurements for {percent}% of the "
    "samples to estimate technical error.",
    "The primary outcome was {outcome}; secondary outcomes were defined before analysis and "
    "registered in a public protocol.",
    "Statistical analyses used linear mixed-effects models with site as a random intercept "
    "and exposure as a fixed effect.",
    "Missing values (less than {small}% of observations) were handled by multiple imputation "
    "with {imputations} imputed data sets.",
    "Model assumptions were checked with residual diagnostics, and sensitivity analyses "
    "excluded outlying observations.",
    "All analyses were performed in R version 4.2 and the code is available in a public "
    "repository.",
    "The study was approved by the relevant ethics committee and all participants gave "
    "informed consent where applicable.",
)
_RESULTS = (
    "Across all sites, {outcome} increased by {percent}% (95% CI {lo} to {hi}) per unit of "
    "exposure (Table 1).",
    "The effect was consistent in direction at {sites} of {sites} sites, although its "
    "magnitude differed between regions (Figure 1).",
    "After adjustment for confounders the association remained significant (p = 0.0{p}).",
    "Secondary outcomes showed smaller but concordant changes, summarised in Table 2.",
    "Technical replicates agreed closely, with an intraclass correlation of 0.9{p}.",
    "No evidence of non-linearity was found when exposure was modelled with restricted "
    "cubic splines.",
    "Sensitivity analyses excluding the largest site gave nearly identical estimates.",
    "Figure 2 shows the distribution of {outcome} by exposure quartile over the study period.",
)
_DISCUSSION = (
    "Our findings show a robust association between {topic} and {outcome} that persists "
    "across sites and analytical choices.",
    "This agrees with experimental work suggesting a causal pathway [{c1}], and extends it "
    "to field conditions.",
    "In contrast to earlier cross-sectional reports [{c2}], the longitudinal design allows "
    "us to rule out reverse causation for the main effect.",
    "Several limitations should be noted. First, the sites were not randomly selected, "
    "which may limit generalisability.",
    "Second, {method} has known biases at low signal levels, which we addressed with "
    "replicate measurements [{c3}].",
    "Third, unmeasured confounding cannot be excluded, although the sensitivity analyses "
    "suggest it would need to be strong to explain the results.",
    "Future work should test whether interventions targeting exposure change {outcome} "
    "in controlled settings.",
)
_CONCLUSION = (
    "Taken together, these results indicate that {outcome} responds predictably to changes "
    "in {topic}, with implications for monitoring and management.",
    "The data and code needed to reproduce all analyses are openly available.",
)
_JOURNALS = (
    "J Appl Ecol",
    "Nat Commun",
    "PLoS Biol",
    "Sci Rep",
    "Proc Natl Acad Sci USA",
    "Environ Sci Technol",
    "BMC Med",
    "Ecol Lett",
    "Glob Change Biol",
    "J Neurosci",
)
_SURNAMES = (
    "Nakamura",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Silva",
    "Kowalski",
    "Haddad",
    "Chen",
    "Fitzgerald",
    "Novak",
    "Rahman",
    "Ortega",
    "Bergstrom",
    "Adeyemi",
    "Rossi",
)
_INITIALS = "ABCDEFGHJKLMNPRST"


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Article:
    key: str
    title: str
    doi: str | None
    journal: str
    year: int
    authors: tuple[str, ...]
    abstract: str
    keywords: tuple[str, ...]
    sections: tuple[Section, ...]
    references: tuple[str, ...]

    @property
    def body_text(self) -> str:
        """Plain text of the whole article (for stored full text and PDFs)."""
        parts = [self.title, ", ".join(self.authors), "Abstract", self.abstract]
        for section in self.sections:
            parts.append(section.heading)
            parts.extend(section.paragraphs)
        parts.append("References")
        parts.extend(f"{i}. {ref}" for i, ref in enumerate(self.references, 1))
        return "\n\n".join(parts)


def make_article(
    key: str, title: str, *, doi: str | None, journal: str, year: int = 2020, short: bool = False
) -> Article:
    """The article for `key`; `short` gives a brief communication (fewer paragraphs)."""
    rng = random.Random(key)
    topic, method, outcome = _TOPICS[rng.randrange(len(_TOPICS))]
    n_refs = rng.randint(25, 40)

    def fill(template: str) -> str:
        lo = rng.randint(5, 20)
        return template.format(
            topic=topic,
            method=method,
            outcome=outcome,
            n=rng.randint(120, 4800),
            sites=rng.randint(4, 12),
            y1=year - rng.randint(4, 8),
            y2=year - 1,
            years=rng.randint(3, 10),
            hours=rng.randint(2, 24),
            percent=rng.randint(5, 40),
            small=rng.randint(2, 6),
            imputations=rng.choice((10, 20, 50)),
            lo=f"{lo / 10:.1f}",
            hi=f"{(lo + rng.randint(5, 30)) / 10:.1f}",
            p=rng.randint(1, 4),
            c1=rng.randint(1, n_refs),
            c2=rng.randint(1, n_refs),
            c3=rng.randint(1, n_refs),
        )

    def paragraphs(templates: tuple[str, ...], count: int) -> tuple[str, ...]:
        out = []
        for _ in range(count):
            picked = rng.sample(templates, k=min(len(templates), rng.randint(4, 6)))
            out.append(" ".join(fill(t) for t in picked))
        return tuple(out)

    scale = 1 if short else 2
    sections = (
        Section("Introduction", paragraphs(_INTRO, 2 * scale)),
        Section("Materials and methods", paragraphs(_METHODS, 2 * scale)),
        Section("Results", paragraphs(_RESULTS, 2 * scale)),
        Section("Discussion", paragraphs(_DISCUSSION, 2 * scale)),
        Section("Conclusions", paragraphs(_CONCLUSION, 1)),
        Section(
            "Acknowledgements",
            ("We thank the field and laboratory teams for their help with data collection.",),
        ),
    )
    authors = tuple(
        f"{rng.choice(_INITIALS)}. {rng.choice(_SURNAMES)}" for _ in range(rng.randint(3, 6))
    )
    abstract = " ".join(
        fill(t) for t in (_INTRO[0], _INTRO[5], _METHODS[0], _RESULTS[0], _CONCLUSION[0])
    )
    references = tuple(_reference(rng, year) for _ in range(n_refs))
    return Article(
        key=key,
        title=title,
        doi=doi,
        journal=journal,
        year=year,
        authors=authors,
        abstract=abstract,
        keywords=(topic, method, outcome),
        sections=sections,
        references=references,
    )


def _reference(rng: random.Random, year: int) -> str:
    authors = ", ".join(
        f"{rng.choice(_SURNAMES)} {rng.choice(_INITIALS)}{rng.choice(_INITIALS)}"
        for _ in range(rng.randint(1, 4))
    )
    topic = rng.choice(_TOPICS)
    return (
        f"{authors}. {topic[0].capitalize()} and {topic[2]}: evidence from {topic[1]}. "
        f"{rng.choice(_JOURNALS)}. {year - rng.randint(1, 20)};{rng.randint(1, 60)}:"
        f"{rng.randint(100, 999)}-{rng.randint(1000, 1999)}. "
        f"doi:10.{rng.randint(1000, 9999)}/{rng.randint(100000, 999999)}"
    )
