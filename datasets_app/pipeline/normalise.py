"""Normalise: NFC, no stray control or zero-width characters, tidy whitespace."""

from __future__ import annotations

import re
import unicodedata

from .items import Item, StepReport

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_CONTROL_TABLE = {
    code: None for code in [*range(0, 32), *range(127, 160)] if chr(code) not in "\n\t"
}
_CONTROL_TABLE.update({ord(c): None for c in _ZERO_WIDTH})
_CONTROL_RE = re.compile("[" + re.escape("".join(chr(c) for c in _CONTROL_TABLE)) + "]")
_HSPACE_RE = re.compile(r"[\t \u00a0\u2000-\u200a\u202f\u205f\u3000]+$", re.MULTILINE)
_NBSP_RE = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_BLANKS_RE = re.compile(r"\n{3,}")


def _maybe_untidy(text: str) -> bool:
    """False only for text normalise_text returns unchanged: printable ASCII and newlines
    (no carriage return, tab, control or non-ASCII character), no space before a line end,
    no run of blank lines, nothing to strip. A few C-level string calls, where normalise_text
    costs several regex passes; most texts are already tidy."""
    return (
        not (text.isascii() and text.replace("\n", "").isprintable())
        or " \n" in text
        or "\n\n\n" in text
        or text != text.strip()
    )


def normalise_text(text: str) -> tuple[str, set[str]]:
    """NFC, no stray control or zero-width characters, \\n line ends, no trailing spaces,
    at most one blank line in a row, no leading/trailing blank space. Inner spacing is kept
    (indentation matters in code answers)."""
    reasons: set[str] = set()
    out = text
    if "\r" in out:
        out = out.replace("\r\n", "\n").replace("\r", "\n")
        reasons.add("line_endings")
    if not out.isascii():
        nfc = unicodedata.normalize("NFC", out)
        if nfc != out:
            reasons.add("unicode_nfc")
            out = nfc
        spaced = _NBSP_RE.sub(" ", out)
        if spaced != out:
            reasons.add("whitespace")
            out = spaced
    if _CONTROL_RE.search(out):
        out = out.translate(_CONTROL_TABLE)
        reasons.add("control_chars")
    tidy = _BLANKS_RE.sub("\n\n", _HSPACE_RE.sub("", out)).strip()
    if tidy != out:
        reasons.add("whitespace")
        out = tidy
    return out, reasons


def step_normalise(items: list[Item]) -> tuple[list[Item], StepReport]:
    report = StepReport("normalise", len(items), len(items))
    for item in items:
        if not any(map(_maybe_untidy, item.texts())):
            continue
        why: set[str] = set()
        for message in item.messages:
            message["content"], reasons = normalise_text(message["content"])
            if reasons:
                item.edited = True
            why |= reasons
        if item.rejected_text:
            item.rejected_text, reasons = normalise_text(item.rejected_text)
            why |= reasons
        if why:
            report.changed += 1
            report.reasons.update(why)
    return items, report
