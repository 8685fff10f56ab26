"""Finding and redacting personal data and secrets in text, and in JSON values recursively.

A string is first checked for what each kind cannot do without (an `@`, a digit, a known
key prefix), one quick scan each; only the kinds that may be there are then matched, by
one compiled alternation, so text without personal data costs a few scans. Card numbers are
redacted only when their digits pass the Luhn check, and phone numbers only with 7 to 15
digits, so order numbers, timestamps and other digit strings survive. A redaction is a
placeholder like `[REDACTED:email]` that no pattern matches, so redacting twice changes
nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

KINDS = ("secret", "email", "card", "phone")
"""Scanned in this order at each position: a bearer token's JWT is one secret."""

_PATTERNS: dict[str, str] = {
    "secret": "|".join(
        (
            r"(?P<bearer>(?i:bearer)\s+)[A-Za-z0-9._~+/=-]{8,}",
            r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            r"(?<![\w-])sk-(?:[a-z]{2,8}-)?[A-Za-z0-9_-]{16,}",
            r"\bgh[pousr]_[A-Za-z0-9]{30,}",
            r"\bgithub_pat_[A-Za-z0-9_]{30,}",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"\bAIza[0-9A-Za-z_-]{35}",
        )
    ),
    # The look-behind starts a match only where a local part can start, not in its middle.
    "email": (
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    ),
    "card": r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d])",
    "phone": "|".join(
        (
            r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)",
            r"(?<![\w+.-])(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w.-]?\d)",
        )
    ),
}


def _has_digit(text: str) -> bool:
    # Ten substring scans (memchr) beat one regex search, which tests each character.
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    )  # fmt: skip


def _has_key_prefix(text: str) -> bool:
    return (
        "earer" in text or "EARER" in text or "sk-" in text or "eyJ" in text
        or "AKIA" in text or "ASIA" in text or "xox" in text or "AIza" in text
        or ("_" in text and ("hp_" in text or "ho_" in text or "hu_" in text
                             or "hs_" in text or "hr_" in text or "github_pat_" in text))
    )  # fmt: skip


def _may_hold(kind: str, text: str) -> bool:
    """Whether `text` has what `kind` cannot do without."""
    if kind == "email":
        return "@" in text
    if kind == "secret":
        return _has_key_prefix(text)
    return _has_digit(text)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


class Redactor:
    """Redacts the chosen kinds (`KINDS`) from strings and from JSON values."""

    def __init__(self, kinds: Collection[str] = KINDS) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kind(s): {', '.join(sorted(unknown))}")
        self.kinds = tuple(kind for kind in KINDS if kind in kinds)
        self.patterns: dict[tuple[str, ...], re.Pattern[str]] = {}

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup  # the outermost group: it closes last
        if kind == "secret" and match.group("bearer") is not None:
            return f"{match.group('bearer')}[REDACTED:secret]"  # keep the scheme
        if kind == "card" and not luhn_valid(_digits(match.group())):
            return match.group()
        if kind == "phone" and not 7 <= len(_digits(match.group())) <= 15:
            return match.group()
        return f"[REDACTED:{kind}]"

    def _pattern(self, kinds: tuple[str, ...]) -> re.Pattern[str]:
        pattern = self.patterns.get(kinds)
        if pattern is None:  # at most one per subset of KINDS
            alternation = "|".join(f"(?P<{kind}>{_PATTERNS[kind]})" for kind in kinds)
            pattern = self.patterns[kinds] = re.compile(alternation)
        return pattern

    def text(self, text: str) -> str:
        present = tuple(kind for kind in self.kinds if _may_hold(kind, text))
        if not present:
            return text
        return self._pattern(present).sub(self._replace, text)

    def value(self, value: Any, skip: Collection[str] = ()) -> Any:
        """`value` with every string in it redacted, except under keys in `skip`; the same
        object when nothing changed, else a copy (the input is never modified)."""
        return _walk(value, self.text, frozenset(skip))


def _walk(value: Any, text: Callable[[str], str], skip: frozenset[str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            new = item if key in skip else _walk(item, text, skip)
            changed = changed or new is not item
            out[key] = new
        return out if changed else value
    if isinstance(value, list):
        items = [_walk(item, text, skip) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    return value
