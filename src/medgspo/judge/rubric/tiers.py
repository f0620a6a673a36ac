"""The five reward tiers of the medical judge: one table read by the parser, the metrics, the plots and the rubric.

The tiers, best first (a completion with no closed thinking block is tier E by rule, :data:`MALFORMED_SCORE`):

    label  value  meaning
    A      +2.0   same meaning as the reference
    B      +0.5   different wording, medically reasonable
    C       0.0   reasonable but outside medicine
    D      -0.5   contradicts the reference
    E      -1.0   incoherent, broken or empty
"""

from __future__ import annotations

import math

TIERS: dict[str, float] = {"A": 2.0, "B": 0.5, "C": 0.0, "D": -0.5, "E": -1.0}
TIER_NAMES: dict[str, str] = {
    "A": "same meaning as the reference",
    "B": "different wording, medically reasonable",
    "C": "reasonable but outside medicine",
    "D": "contradicts the reference",
    "E": "incoherent, broken or empty",
}
TIER_SHORT: dict[str, str] = {
    "A": "same meaning",
    "B": "reasonable",
    "C": "non-medical",
    "D": "contradicts",
    "E": "incoherent",
}
# Report keys, best first: {"+2.0": 2.0, "+0.5": 0.5, "0.0": 0.0, "-0.5": -0.5, "-1.0": -1.0}
TIER_KEYS: dict[str, float] = {(f"{v:+.1f}" if v else "0.0"): v for v in TIERS.values()}
MALFORMED_SCORE = TIERS["E"]  # a completion without a closed thinking block is incoherent by rule, never judged


def label_for(score: float | None) -> str | None:
    """The tier label (``A``-``E``) of a tier value, or ``None``.

    >>> label_for(0.5), label_for(-1), label_for(0.7), label_for(None)
    ('B', 'E', None, None)
    """
    if score is None:
        return None
    return next((label for label, value in TIERS.items() if math.isclose(value, score)), None)


def tier_key(score: float | None) -> str | None:
    """The report key of a tier value (``"+2.0"`` ... ``"-1.0"``), or ``None`` for a value that is not a tier.

    >>> tier_key(0.5), tier_key(-1), tier_key(0.0), tier_key(0.7)
    ('+0.5', '-1.0', '0.0', None)
    """
    label = label_for(score)
    return None if label is None else list(TIER_KEYS)[list(TIERS).index(label)]


def tier_legend(label: str) -> str:
    """``"+2.0 same meaning"``: a tier's value and short name, for plots and tables.

    >>> tier_legend("C")
    '0.0 non-medical'
    """
    return f"{tier_key(TIERS[label])} {TIER_SHORT[label]}"
