"""Decision thresholds chosen by measured error rates, with confidence intervals.

``flag_at`` meets ``target_fpr`` on genuine photos, ``pass_below`` meets ``target_recall`` on fakes;
chosen on one split, reported on another with Clopper-Pearson 95 % intervals.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> list[float]:
    """Returns the exact two-sided binomial interval [low, high] of successes / trials."""
    if trials == 0:
        return [0.0, 1.0]
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return [low, high]


def rate(successes: int, trials: int) -> dict[str, Any]:
    """Returns a rate with its count and 95 % interval."""
    return {
        "rate": successes / trials if trials else math.nan,
        "count": int(successes),
        "of": int(trials),
        "ci95": clopper_pearson(successes, trials),
    }


def choose_flag_at(real_p: np.ndarray, target_fpr: float) -> float:
    """Returns the lowest threshold t with mean(real_p >= t) <= target_fpr."""
    scores = np.sort(np.asarray(real_p, dtype=np.float64))[::-1]
    if len(scores) == 0:
        raise ValueError("no genuine images to choose flag_at from")
    allowed = math.floor(target_fpr * len(scores) + 1e-9)
    if allowed >= len(scores):
        return 0.0
    # Just above the (allowed+1)-th highest genuine score: at most `allowed` scores reach it.
    return float(min(1.0, np.nextafter(scores[allowed], np.inf)))


def choose_pass_below(fake_p: np.ndarray, target_recall: float) -> float:
    """Returns the highest threshold t with mean(fake_p < t) <= 1 - target_recall."""
    scores = np.sort(np.asarray(fake_p, dtype=np.float64))
    if len(scores) == 0:
        raise ValueError("no fake images to choose pass_below from")
    allowed = math.floor((1.0 - target_recall) * len(scores) + 1e-9)
    if allowed >= len(scores):
        return 1.0
    return float(scores[allowed])


def error_rates(
    real_p: np.ndarray, fake_p: np.ndarray, *, flag_at: float, pass_below: float
) -> dict[str, Any]:
    """Returns what the thresholds do to genuine photos and to fakes, with 95 % intervals."""
    real_p, fake_p = np.asarray(real_p), np.asarray(fake_p)
    return {
        "false_positive_rate": rate(int((real_p >= flag_at).sum()), len(real_p)),
        "genuine_auto_passed": rate(int((real_p < pass_below).sum()), len(real_p)),
        "fake_flagged": rate(int((fake_p >= flag_at).sum()), len(fake_p)),
        "recall_not_passed": rate(int((fake_p >= pass_below).sum()), len(fake_p)),
    }


def choose_thresholds(
    *,
    choose: tuple[np.ndarray, np.ndarray],
    report: tuple[np.ndarray, np.ndarray],
    target_fpr: float = 0.01,
    target_recall: float = 0.95,
) -> dict[str, Any]:
    """Chooses flag_at and pass_below on ``choose`` = (real_p, fake_p), reports on ``report``.

    When the recall target would put ``pass_below`` above ``flag_at`` the review band is empty:
    ``pass_below`` is lowered to ``flag_at`` and ``notes`` says so.
    """
    if not 0 <= target_fpr < 1 or not 0 < target_recall <= 1:
        raise ValueError("expected 0 <= target_fpr < 1 and 0 < target_recall <= 1")
    flag_at = choose_flag_at(choose[0], target_fpr)
    pass_below = choose_pass_below(choose[1], target_recall)
    notes = []
    if np.mean(np.asarray(choose[0]) >= flag_at) > target_fpr:
        notes.append(
            "genuine photos scored p(fake) = 1.0: the false-positive target is unreachable"
        )
    if pass_below > flag_at:
        notes.append(
            f"the recall target put pass_below at {pass_below:.4f}, above flag_at; "
            "lowered to flag_at (no review band)"
        )
        pass_below = flag_at
    return {
        "flag_at": flag_at,
        "pass_below": pass_below,
        "target_fpr": target_fpr,
        "target_recall": target_recall,
        "chosen_on": {"genuine": len(choose[0]), "fake": len(choose[1])},
        "chosen": error_rates(*choose, flag_at=flag_at, pass_below=pass_below),
        "reported_on": {"genuine": len(report[0]), "fake": len(report[1])},
        "reported": error_rates(*report, flag_at=flag_at, pass_below=pass_below),
        "notes": notes,
    }


def summary_line(thresholds: dict[str, Any]) -> str:
    """Returns one line: the thresholds and the reported rates with their intervals."""
    rep = thresholds["reported"]

    def fmt(entry: dict[str, Any]) -> str:
        low, high = entry["ci95"]
        return f"{entry['rate']:.3f} [{low:.3f}, {high:.3f}] ({entry['count']}/{entry['of']})"

    return (
        f"flag_at {thresholds['flag_at']:.4f}: false positives {fmt(rep['false_positive_rate'])}, "
        f"fakes flagged {fmt(rep['fake_flagged'])}; pass_below {thresholds['pass_below']:.4f}: "
        f"fakes not passed {fmt(rep['recall_not_passed'])}"
    )
