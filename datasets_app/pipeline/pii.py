"""PII: e-mail addresses, IBANs, card and phone numbers (and configured patterns) masked with
typed placeholders, or their examples dropped. Masked before deduplication, so that duplicates
are judged on what will be trained on."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from .items import TEXT_SEPARATOR, Item, StepReport

_EMAIL = r"(?P<EMAIL>(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
_IBAN = r"(?P<IBAN>\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b)"
_CARD = r"(?P<CARD>(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-]))"
_PHONE = (
    r"(?P<PHONE>(?<![\w+])(?:\+\d{1,3}[ .-]?|1[ .-](?=\d{3}[ .-]\d{3}[ .-]\d{4}))?"
    r"(?:\(\d{1,4}\)[ .-]?)?"
    r"\d{2,5}(?:[ .-]\d{2,5}){1,4}(?![\w-])|(?<![\w+])\+\d{7,15}(?!\w))"
)
_EMAIL_RE = re.compile(_EMAIL)
_IBAN_RE = re.compile(_IBAN)
_NUMBER_RE = re.compile("|".join([_CARD, _PHONE]))
# Cheap scans that rule texts out before the costlier patterns run (most text has no PII).
_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")
_NUMBER_RUN = re.compile(r"[+(]?\d[\d ().+-]*\d")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# What a card or phone number needs at the least (see `_may_hold_pii`): a "+" or "(" before a
# digit, a group of 10+ digits, 13 digits, or three digit groups, with only number-run
# separators between the digits. Starts only at a group's first digit, possessive: linear.
_NUMBER_HINT = re.compile(
    r"[+(]\d|\d(?<!\d\d)(?:\d{9}|(?:[ ().+-]*+\d){12}|\d*+[ ().+-]++\d++[ ().+-]++\d)"
)
PII_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
BUILTIN_PII_TYPES = ("EMAIL", "IBAN", "CARD", "PHONE")


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _builtin_kind(match: re.Match[str]) -> str | None:
    kind = match.lastgroup
    text = match.group(0)
    if kind == "IBAN":
        return "IBAN" if iban_ok(text) else None
    if kind == "CARD":
        digits = re.sub(r"\D", "", text)
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return "CARD"
        # Not a card: it may still be a long phone number written with separators.
        return "PHONE" if _phone_ok(text) else None
    if kind == "PHONE":
        return "PHONE" if _phone_ok(text) else None
    return kind


_GROUPS_RE = re.compile(r"\d+")


def _phone_ok(text: str) -> bool:
    """A phone number has 7-15 digits and looks like one: a leading + or an area code in
    brackets, three or more groups (555-123-4567, 020 7946 0958), or 10+ digits. Two groups
    (a reference like 12-34567) and dates are not phones."""
    groups = _GROUPS_RE.findall(text)
    digits = sum(len(g) for g in groups)
    if not 7 <= digits <= 15 or _ISO_DATE.match(text):
        return False
    if text.startswith("+") or "(" in text:
        return True
    if "." in text and not any(c in text for c in " -"):
        return False  # 1.234.567 is an amount
    return len(groups) >= 3 or (len(groups) == 1 and digits >= 10)


def _may_hold_pii(text: str) -> bool:
    """False only for text the built-in patterns leave unchanged.

    An e-mail needs an "@"; an IBAN, the IBAN hint (the scrubber looks for IBANs only there).
    A card or phone is a match M of the number patterns inside a run of digits and separators
    " ().+-", and M's digit groups are whole groups of that run (the patterns' look-arounds
    forbid a digit on either side). A card needs 13+ digits in M. A phone needs 7-15 digits and
    one of: M starts with "+" or holds "(", each of which the patterns only allow right before
    a digit; three or more groups; a single group of 10+ digits. So text without "@", the IBAN
    hint and `_NUMBER_HINT` holds nothing the scrubber replaces: two-group references
    ("12-34567"), years and amounts are ruled out here, not scrubbed one by one."""
    return "@" in text or bool(_IBAN_HINT.search(text) or _NUMBER_HINT.search(text))


# Byte classes for `texts_may_hold_pii`, as bytes.translate tables: every byte of interest is
# above _SEPARATOR, so one comparison finds them all.
_OTHER, _SEPARATOR, _DIGIT, _OPENER, _UPPER, _FLAG, _END = range(7)


def _byte_classes() -> bytes:
    table = bytearray([_OTHER]) * 256
    for char in " ).-":
        table[ord(char)] = _SEPARATOR
    for char in "+(":
        table[ord(char)] = _OPENER  # a separator too
    table[ord("0") : ord("9") + 1] = bytes([_DIGIT]) * 10
    table[ord("A") : ord("Z") + 1] = bytes([_UPPER]) * 26
    table[ord("@")] = _FLAG
    table[128:] = bytes([_FLAG]) * 128  # non-ASCII: checked with _may_hold_pii itself
    table[0] = _END
    return bytes(table)


_BYTE_CLASS = _byte_classes()


_GAP_LOOK = 4  # separator gaps between digits checked with numpy up to this length


def texts_may_hold_pii(texts: list[str]) -> np.ndarray:
    """`_may_hold_pii` of every text, as a boolean array: the same answers at a fraction of the
    cost. The texts are joined into one byte string and the same conditions are read off it
    with numpy, so that no Python code runs per text except for the few that pass. Texts with
    non-ASCII characters (whose digits may be other scripts' digits) are checked with
    `_may_hold_pii` itself, and so is everything if a text holds the separator."""
    count = len(texts)
    corpus = TEXT_SEPARATOR.join(texts)
    if corpus.count(TEXT_SEPARATOR) != max(count - 1, 0):
        return np.fromiter(map(_may_hold_pii, texts), dtype=bool, count=count)
    raw = corpus.encode("utf-8")
    del corpus
    classes = np.frombuffer(raw.translate(_BYTE_CLASS) + bytes(_GAP_LOOK + 4), dtype=np.uint8)
    where = np.flatnonzero(classes > _SEPARATOR)
    kind = classes[where]
    ends = where[kind == _END]  # the byte offset at which each text but the last ends
    hit = np.zeros(count, dtype=bool)

    def mark(positions: np.ndarray) -> None:
        hit[np.searchsorted(ends, positions)] = True

    mark(where[kind == _FLAG])
    openers = where[kind == _OPENER]
    mark(openers[classes[openers + 1] == _DIGIT])
    upper = where[kind == _UPPER]
    iban = (
        (classes[upper + 1] == _UPPER)
        & (classes[upper + 2] == _DIGIT)
        & (classes[upper + 3] == _DIGIT)
    )
    mark(upper[iban])
    # Digit runs: digits joined by gaps of separators only.
    at = where[kind == _DIGIT]
    del where, kind
    if len(at):
        gap = np.diff(at) - 1
        # A gap breaks the run if it holds anything but separators: its first bytes are
        # checked at once, the rest only for the rare long gaps that start with separators.
        broken = np.zeros(len(gap), dtype=bool)
        for offset in range(_GAP_LOOK):
            byte = classes[at[:-1] + 1 + offset]
            broken |= (gap > offset) & (byte != _SEPARATOR) & (byte != _OPENER)
        for k in np.flatnonzero(~broken & (gap > _GAP_LOOK)):  # long all-separator starts
            start, stop = int(at[k]) + 1, int(at[k + 1])
            broken[k] = any(b not in (_SEPARATOR, _OPENER) for b in classes[start:stop].tolist())
        starts_run = np.r_[True, broken]
        starts_group = np.r_[True, gap != 0]
        run = np.cumsum(starts_run) - 1
        digits_in_run = np.bincount(run)
        groups_in_run = np.bincount(run[starts_group])
        flagged_runs = (digits_in_run >= 13) | (groups_in_run >= 3)
        mark(at[starts_run][flagged_runs])
        group_sizes = np.bincount(np.cumsum(starts_group) - 1)
        mark(at[starts_group][group_sizes >= 10])
    for index in np.flatnonzero(hit):
        if not texts[index].isascii():
            hit[index] = _may_hold_pii(texts[index])
    return hit


def allow_pattern(allow: Iterable[str]) -> re.Pattern[str] | None:
    """The texts a team publishes itself -- its support phone number, its complaints address --
    are not personal data, and masking them teaches the model to answer "call <PHONE>". Each
    is matched literally, ignoring case, and only as a whole: not inside a longer number,
    word or address."""
    literals = sorted({a.strip() for a in allow if a and a.strip()}, key=len, reverse=True)
    if not literals:
        return None
    alternatives = "|".join(re.escape(literal) for literal in literals)
    return re.compile(rf"(?<![\w.+@-])(?:{alternatives})(?![\w@-])(?!\.\w)", re.IGNORECASE)


class PiiScrubber:
    """Replaces PII with typed placeholders (`<EMAIL>`) and counts what it found, per type."""

    def __init__(
        self, extra_patterns: dict[str, str] | None = None, allow: Iterable[str] = ()
    ) -> None:
        self.extra = [(kind, re.compile(p)) for kind, p in sorted((extra_patterns or {}).items())]
        self.allow = allow_pattern(allow)

    def _allowed(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self.allow.finditer(text)] if self.allow else []

    def scrub(self, text: str) -> tuple[str, Counter]:
        found: Counter = Counter()
        # A match that lies inside an allowed text (the organisation's own published phone
        # number or address) is kept. The allowed spans are found again before each pass,
        # since the replacements before it move them; nothing inside them is ever replaced.
        allowed = self._allowed(text)
        offset = 0

        def kept(match: re.Match[str]) -> bool:
            start, end = offset + match.start(), offset + match.end()
            return any(a <= start and end <= b for a, b in allowed)

        for kind, pattern in self.extra:

            def replace_extra(match: re.Match[str], kind: str = kind) -> str:
                if kept(match):
                    return match.group(0)
                found[kind] += 1
                return f"<{kind}>"

            text = pattern.sub(replace_extra, text)
            allowed = self._allowed(text)

        def replace(match: re.Match[str]) -> str:
            kind = _builtin_kind(match)
            if kind is None or kept(match):
                return match.group(0)
            found[kind] += 1
            return f"<{kind}>"

        if "@" in text:
            text = _EMAIL_RE.sub(replace, text)
            allowed = self._allowed(text)
        # An IBAN-shaped string failing its check is an account-like code, not a phone number:
        # its span is kept out of the number pass below.
        protected: list[tuple[int, int]] = []
        if _IBAN_HINT.search(text):
            pieces, last = [], 0
            for match in _IBAN_RE.finditer(text):
                pieces.append(text[last : match.start()])
                if iban_ok(match.group(0)) and not kept(match):
                    found["IBAN"] += 1
                    pieces.append("<IBAN>")
                else:
                    at = sum(len(piece) for piece in pieces)
                    protected.append((at, at + len(match.group(0))))
                    pieces.append(match.group(0))
                last = match.end()
            pieces.append(text[last:])
            text = "".join(pieces)
            allowed = self._allowed(text)
        # Cards and phones lie inside runs of digits and separators; only runs with 7+ digits
        # are examined, each with one character of context for the patterns' look-arounds.
        pieces, last = [], 0
        for run in _NUMBER_RUN.finditer(text):
            start, end = run.span()
            if sum(map(str.isdigit, run.group(0))) < 7:
                continue
            if any(a < end and start < b for a, b in protected):
                continue
            start = max(start - 1, last)
            end = min(end + 1, len(text))
            pieces.append(text[last:start])
            offset = start
            pieces.append(_NUMBER_RE.sub(replace, text[start:end]))
            last = end
        if pieces:
            pieces.append(text[last:])
            text = "".join(pieces)
        return text, found


def step_pii(
    items: list[Item],
    *,
    mode: str,
    patterns: dict[str, str] | None = None,
    allow: Iterable[str] = (),
) -> tuple[list[Item], StepReport, dict[str, int]]:
    """mode "mask" replaces, "drop" removes every example holding any PII, "off" skips.
    `allow`: texts that are never PII (see `allow_pattern`)."""
    report = StepReport("pii", len(items), len(items), extra={"mode": mode})
    per_type: Counter = Counter()
    if mode == "off":
        return items, report, {}
    scrubber = PiiScrubber(patterns, allow)
    # Most texts hold no PII and are ruled out at once; configured patterns can match anything,
    # so with them every text is scrubbed.
    texts = [text for item in items for text in item.texts()]
    flags = (
        np.ones(len(texts), dtype=bool) if scrubber.extra else texts_may_hold_pii(texts)
    ).tolist()
    del texts
    kept: list[Item] = []
    at = 0
    for item in items:
        width = len(item.messages) + (1 if item.rejected_text else 0)
        if not any(flags[at : at + width]):
            at += width
            kept.append(item)
            continue
        found: Counter = Counter()
        new_contents = []
        for message in item.messages:
            cleaned = message["content"]
            if flags[at]:
                cleaned, hits = scrubber.scrub(cleaned)
                found.update(hits)
            new_contents.append(cleaned)
            at += 1
        rejected = item.rejected_text
        if rejected:
            if flags[at]:
                rejected, hits = scrubber.scrub(rejected)
                found.update(hits)
            at += 1
        if not found:
            kept.append(item)
            continue
        per_type.update(found)
        if mode == "drop":
            report.reasons.update(f"contains {kind}" for kind in found)
            continue
        for message, cleaned in zip(item.messages, new_contents, strict=True):
            if cleaned != message["content"]:
                message["content"] = cleaned
                item.edited = True
        item.rejected_text = rejected
        report.changed += 1
        # Replacements, as `per_type` counts them: "masked EMAIL: 82" and "EMAIL: 82" on the
        # same page. (Counting examples here showed 80, the examples holding any e-mail, under
        # a label that reads as a number of e-mails.) `changed` counts the examples.
        report.reasons.update({f"masked {kind}": n for kind, n in found.items()})
        kept.append(item)
    report.count_out = len(kept)
    return kept, report, dict(sorted(per_type.items()))
