"""The quality pipeline: pure functions over in-memory items, no Django, no database.

Each step takes the surviving items and returns the survivors plus a `StepReport` saying how
many it removed or changed, and why. Every choice (which duplicate is kept, which example goes
to eval, which one a cap drops) depends only on content hashes and the seed, never on database
ids or times, so the same data gives the same version on SQLite and PostgreSQL, run after run.

Order: normalise -> PII -> exact dedup -> near dedup -> length -> balance -> split (+ leakage).
PII is masked before deduplication so that duplicates are judged on what will be trained on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Items and reports


@dataclass(slots=True)
class Item:
    """One example on its way through the pipeline."""

    example_id: int
    messages: list[dict[str, str]]
    label: str
    weight: float
    source: str = ""
    queue: str = ""
    tags: list[str] = field(default_factory=list)
    rejected_text: str = ""
    content_hash: str = ""
    split: str = ""
    input_key: str = ""  # the loose input exact dedup compared; near dedup groups by it
    edited: bool = False  # a step changed the messages (else they are the example's own)

    @property
    def prompt_text(self) -> str:
        """The prompt as compared for near duplicates and leakage: the turns before the answer,
        without system messages. A system prompt that every conversation shares would
        otherwise make distinct questions look alike."""
        turns = [m["content"] for m in self.messages[:-1] if m["role"] != "system"]
        return "\n".join(turns or [m["content"] for m in self.messages[:-1]])

    @property
    def target(self) -> str:
        return self.messages[-1]["content"] if self.messages else ""

    def texts(self) -> list[str]:
        """Every text a content step reads or rewrites: the messages, then the rejected text."""
        out = [m["content"] for m in self.messages]
        if self.rejected_text:
            out.append(self.rejected_text)
        return out

    def values(self, dimension: str) -> list[str]:
        if dimension == "label":
            return [self.label]
        if dimension == "source":
            return [self.source]
        if dimension == "queue":
            return [self.queue]
        if dimension == "tag":
            return list(self.tags)
        raise ValueError(dimension)


@dataclass
class StepReport:
    name: str
    count_in: int
    count_out: int
    changed: int = 0
    reasons: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.count_in,
            "out": self.count_out,
            "removed": self.count_in - self.count_out,
            "changed": self.changed,
            "reasons": dict(sorted(self.reasons.items())),
            "samples": self.samples[:10],
            **self.extra,
        }


# One encoder for every call: json.dumps with options builds a new encoder each time, which
# cost more than the encoding itself for ~300k small values per build. Same output.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


_quote = json.encoder.encode_basestring  # a JSON string, as the encoder writes it (C)


def _canonical_content(messages: list[dict[str, str]], rejected_text: str) -> str:
    """canonical_json({"messages": messages, "rejected": rejected_text}), written out directly
    for the usual shape (each message exactly a string role and content, keys in sorted
    order): the same bytes at half the cost of the sorting encoder."""
    if all(len(m) == 2 for m in messages):
        try:
            quoted = [(_quote(m["content"]), _quote(m["role"])) for m in messages]
            turns = ",".join([f'{{"content":{c},"role":{r}}}' for c, r in quoted])
            return f'{{"messages":[{turns}],"rejected":{_quote(rejected_text)}}}'
        except (KeyError, TypeError):
            pass  # another shape: the encoder below
    return canonical_json({"messages": messages, "rejected": rejected_text})


def content_hash(messages: list[dict[str, str]], rejected_text: str = "") -> str:
    """SHA-256 of the processed content; identical on every database and run."""
    return hashlib.sha256(_canonical_content(messages, rejected_text).encode("utf-8")).hexdigest()


def seeded_rank(seed: int, salt: str, digest: str) -> int:
    """A deterministic pseudo-random rank for an item, from the seed and its content hash."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{digest}".encode()).digest()[:8], "big")


def keeper_key(item: Item) -> tuple[float, str]:
    """Which of several duplicates survives: the heaviest (most agreement), then the smallest
    content hash; never a database id, so the choice is the same everywhere."""
    return (-item.weight, item.content_hash)


# ---------------------------------------------------------------------------------------------
# Normalise

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


# ---------------------------------------------------------------------------------------------
# PII

_EMAIL = r"(?P<EMAIL>(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
_IBAN = r"(?P<IBAN>\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b)"
_CARD = r"(?P<CARD>(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-]))"
_PHONE = (
    r"(?P<PHONE>(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
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
TEXT_SEPARATOR = "\x00"  # in no text: ingest refuses NUL, normalise strips it
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


class PiiScrubber:
    """Replaces PII with typed placeholders (`<EMAIL>`) and counts what it found, per type."""

    def __init__(self, extra_patterns: dict[str, str] | None = None):
        self.extra = [(kind, re.compile(p)) for kind, p in sorted((extra_patterns or {}).items())]

    def scrub(self, text: str) -> tuple[str, Counter]:
        found: Counter = Counter()

        for kind, pattern in self.extra:

            def replace_extra(match: re.Match[str], kind: str = kind) -> str:
                found[kind] += 1
                return f"<{kind}>"

            text = pattern.sub(replace_extra, text)

        def replace(match: re.Match[str]) -> str:
            kind = _builtin_kind(match)
            if kind is None:
                return match.group(0)
            found[kind] += 1
            return f"<{kind}>"

        if "@" in text:
            text = _EMAIL_RE.sub(replace, text)
        # An IBAN-shaped string failing its check is an account-like code, not a phone number:
        # its span is kept out of the number pass below.
        protected: list[tuple[int, int]] = []
        if _IBAN_HINT.search(text):
            pieces, last = [], 0
            for match in _IBAN_RE.finditer(text):
                pieces.append(text[last : match.start()])
                if iban_ok(match.group(0)):
                    found["IBAN"] += 1
                    pieces.append("<IBAN>")
                else:
                    at = sum(len(piece) for piece in pieces)
                    protected.append((at, at + len(match.group(0))))
                    pieces.append(match.group(0))
                last = match.end()
            pieces.append(text[last:])
            text = "".join(pieces)
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
            pieces.append(_NUMBER_RE.sub(replace, text[start:end]))
            last = end
        if pieces:
            pieces.append(text[last:])
            text = "".join(pieces)
        return text, found


def step_pii(
    items: list[Item], *, mode: str, patterns: dict[str, str] | None = None
) -> tuple[list[Item], StepReport, dict[str, int]]:
    """mode "mask" replaces, "drop" removes every example holding any PII, "off" skips."""
    report = StepReport("pii", len(items), len(items), extra={"mode": mode})
    per_type: Counter = Counter()
    if mode == "off":
        return items, report, {}
    scrubber = PiiScrubber(patterns)
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
        report.reasons.update(f"masked {kind}" for kind in found)
        kept.append(item)
    report.count_out = len(kept)
    return kept, report, dict(sorted(per_type.items()))


# ---------------------------------------------------------------------------------------------
# Duplicates

_SPACE_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"\w+")
_TOKEN_RE = re.compile(r"\w+|" + TEXT_SEPARATOR)  # words, and the separator between texts


def _loose(text: str) -> str:
    # str.split() splits on exactly the characters \s matches (str.isspace), so this equals
    # _SPACE_RE.sub(" ", text).strip(), at a third of the cost.
    return " ".join(text.split()).casefold()


def _loose_turns(item: Item) -> list[str]:
    return [f"{m['role']}\x1f{_loose(m['content'])}" for m in item.messages]


def exact_key(item: Item) -> str:
    """Messages compared ignoring case and whitespace."""
    return "\x1e".join(_loose_turns(item))


def input_key(item: Item) -> str:
    return "\x1e".join(_loose_turns(item)[:-1])


def assign_hashes(items: list[Item]) -> None:
    for item in items:
        item.content_hash = content_hash(item.messages, item.rejected_text)


def step_exact_dedup(items: list[Item]) -> tuple[list[Item], StepReport]:
    report = StepReport("exact_dedup", len(items), 0)
    best: dict[str, Item] = {}
    keys: list[str] = []
    for item in items:
        # Each text is folded once for both keys: near dedup groups by the input key.
        turns = _loose_turns(item)
        item.input_key = "\x1e".join(turns[:-1])
        key = "\x1e".join(turns)
        keys.append(key)
        current = best.get(key)
        if current is None or keeper_key(item) < keeper_key(current):
            best[key] = item
    kept_ids = {id(item) for item in best.values()}
    kept = [item for item in items if id(item) in kept_ids]
    for item, key in zip(items, keys, strict=True):
        if id(item) not in kept_ids:
            keeper = best[key]
            report.reasons["same messages ignoring case and whitespace"] += 1
            report.samples.append({"removed": item.example_id, "kept": keeper.example_id})
    report.count_out = len(kept)
    return kept, report


def shingles(text: str, n: int) -> list[tuple[str, ...]]:
    words = _WORD_RE.findall(text.casefold())
    if len(words) < n:
        return [tuple(words)] if words else []
    return list(zip(*(words[i:] for i in range(n)), strict=False))


@dataclass
class InputGraph:
    """Items grouped by identical (loose) input; edges join groups whose inputs' word n-gram
    Jaccard similarity is at least the join threshold, with the similarity."""

    group_of: list[int]  # item index -> group
    edges: dict[int, dict[int, float]]

    def neighbours(self, group: int, threshold: float) -> Iterable[int]:
        return (g for g, sim in self.edges.get(group, {}).items() if sim >= threshold)


_EPS = 1e-9
_PAIR_BLOCK = 4_000_000  # candidate pairs made at once (bounds memory on skewed data)


def _dense(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Numbers 0..k-1 for the distinct values, in value order (np.unique's inverse, by one
    sort: numpy 2's hash-based np.unique was several times slower on these arrays)."""
    if not len(values):
        return values.astype(np.int64), 0
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.empty(len(values), dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    ids = np.cumsum(new, dtype=np.int64) - 1
    out = np.empty(len(values), dtype=np.int64)
    out[order] = ids
    return out, int(ids[-1]) + 1


def jaccard_join(sets: list[frozenset[int]], threshold: float) -> list[tuple[int, int, float]]:
    """Every pair of sets with Jaccard >= threshold, exactly (no sampling, no false negatives).

    Pairs come as (a, b, similarity) with a < b. See `_jaccard_join_csr`."""
    sizes = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
    indptr = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    flat = np.fromiter(itertools.chain.from_iterable(sets), dtype=np.int64, count=int(indptr[-1]))
    return _jaccard_join_csr(indptr, flat, threshold)


def _jaccard_join_csr(
    indptr: np.ndarray, elements: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """The exact join over sets given as one array of distinct elements per set (CSR form)."""
    n_sets = len(indptr) - 1
    if threshold <= 0:
        raise ValueError("threshold must be > 0")
    owner = np.repeat(np.arange(n_sets, dtype=np.int64), np.diff(indptr))
    element, distinct = _dense(elements)
    return _join_pairs(owner, element, n_sets, distinct, threshold)


def _join_pairs(
    owner: np.ndarray, element: np.ndarray, n_sets: int, n_elements: int, threshold: float
) -> list[tuple[int, int, float]]:
    """Every pair of sets with Jaccard >= threshold, exactly, from (set, element) pairs (each
    set's elements distinct, elements numbered 0..n_elements-1, in any order).

    Prefix filtering (Chaudhuri et al. 2006; Bayardo et al. "All-Pairs", 2007): order each
    set's elements by global rarity; two sets with Jaccard >= t must share an element among
    the first |x| - ceil(t*|x|) + 1 of each. So the candidates are exactly the pairs sharing
    a prefix element (and with compatible sizes); numpy lists them, and each is then verified
    with its exact Jaccard. No sampling, no hashing of elements: nothing above the threshold
    can be missed, and the result equals `jaccard_join_reference`'s. Pairs come as
    (a, b, similarity) with a < b, in order.
    """
    if threshold <= 0:
        raise ValueError("threshold must be > 0")
    if n_sets < 2 or not len(element):
        return []
    # Rank elements by document frequency (rarest first), then by number: a total order.
    frequency = np.bincount(element, minlength=n_elements)
    rank = np.empty(n_elements, dtype=np.int64)
    rank[np.argsort(frequency * n_elements + np.arange(n_elements), kind="stable")] = np.arange(
        n_elements
    )
    ranked = rank[element]
    # Each set's elements, rarest first: one sort of (set, rank) keys where they fit in 63 bits.
    if n_sets * n_elements < 2**62:
        keyed = owner * n_elements + ranked
        keyed.sort()
        owner, ranked = np.divmod(keyed, n_elements)
        del keyed
    else:
        order = np.lexsort((ranked, owner))
        owner, ranked = owner[order], ranked[order]
    sizes = np.bincount(owner, minlength=n_sets)
    indptr = np.zeros(n_sets + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    # Prefix of each set, and the (element, set) postings of all prefixes.
    prefix = sizes - np.ceil(threshold * sizes - _EPS).astype(np.int64) + 1
    prefix = np.clip(prefix, 0, sizes)
    at = np.arange(len(ranked), dtype=np.int64) - np.repeat(indptr[:-1], sizes)
    in_prefix = at < np.repeat(prefix, sizes)
    post_element, post_set = ranked[in_prefix], owner[in_prefix]
    by_element = np.lexsort((post_set, post_element))
    post_element, post_set = post_element[by_element], post_set[by_element]
    # Every pair within one element's postings: position k pairs with k+1 .. end-1.
    starts = np.flatnonzero(np.r_[True, post_element[1:] != post_element[:-1]])
    ends = np.r_[starts[1:], len(post_element)]
    end_of = np.repeat(ends, ends - starts)
    partners = end_of - np.arange(len(post_element)) - 1
    keys = []
    block_starts = np.r_[0, np.cumsum(partners)]
    k = 0
    while k < len(partners):
        # Cut the positions into blocks of at most _PAIR_BLOCK pairs (at least one position).
        stop = int(np.searchsorted(block_starts, block_starts[k] + _PAIR_BLOCK, side="right"))
        stop = max(stop - 1, k + 1)
        counts = partners[k:stop]
        total = int(counts.sum())
        if total:
            left = np.repeat(np.arange(k, stop, dtype=np.int64), counts)
            step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            a, b = post_set[left], post_set[left + 1 + step]
            sa, sb = sizes[a], sizes[b]
            fits = np.minimum(sa, sb) >= threshold * np.maximum(sa, sb) - _EPS
            a, b = a[fits], b[fits]
            keys.append(np.minimum(a, b) * n_sets + np.maximum(a, b))
        k = stop
    if not keys:
        return []
    # A pair appears once per prefix element the two sets share: c times. Say x's prefix ends
    # at a rarer element than y's; then every common element after x's prefix lies in x's
    # suffix, so the overlap is at most c + |x| - prefix(x). Pairs that cannot reach the
    # threshold even so are dropped before the exact check.
    keyed = np.sort(np.concatenate(keys))
    if not len(keyed):
        return []
    first = np.flatnonzero(np.r_[True, keyed[1:] != keyed[:-1]])
    shared = np.diff(np.r_[first, len(keyed)])
    pairs = keyed[first]
    left_sets, right_sets = pairs // n_sets, pairs % n_sets
    # (An empty set has no prefix and is in no pair: its index is only clipped.)
    last = ranked[np.minimum(indptr[:-1] + np.maximum(prefix, 1) - 1, len(ranked) - 1)]
    rest = sizes - prefix
    suffix = np.where(last[left_sets] <= last[right_sets], rest[left_sets], rest[right_sets])
    bound = np.minimum(shared + suffix, np.minimum(sizes[left_sets], sizes[right_sets]))
    union = sizes[left_sets] + sizes[right_sets] - bound
    reach = bound / union >= threshold - _EPS
    left_sets, right_sets = left_sets[reach], right_sets[reach]
    inter = _intersections(indptr, ranked, left_sets, right_sets, n_elements)
    sim = inter / (sizes[left_sets] + sizes[right_sets] - inter)
    close = sim >= threshold - _EPS
    return list(
        zip(left_sets[close].tolist(), right_sets[close].tolist(), sim[close].tolist(), strict=True)
    )


def _gather(
    indptr: np.ndarray, values: np.ndarray, sets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """values of the given sets, one after another, and the position (in `sets`) of each."""
    sizes = indptr[sets + 1] - indptr[sets]
    total = int(sizes.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return values[np.repeat(indptr[sets], sizes) + offsets], np.repeat(np.arange(len(sets)), sizes)


def _intersections(
    indptr: np.ndarray,
    elements: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    n_elements: int,
    block: int = 2_000_000,
) -> np.ndarray:
    """|left[p] & right[p]| for every pair p, exactly: both sets' (distinct) elements keyed by
    the pair, sorted; each key seen twice is one element the two share."""
    out = np.zeros(len(left), dtype=np.int64)
    sizes = np.diff(indptr)
    weight = sizes[left] + sizes[right]
    start = 0
    while start < len(left):
        stop = int(np.searchsorted(np.cumsum(weight[start:]), block, side="right")) + start
        stop = max(stop, start + 1)
        a, pa = _gather(indptr, elements, left[start:stop])
        b, pb = _gather(indptr, elements, right[start:stop])
        keyed = np.sort(np.concatenate([pa * n_elements + a, pb * n_elements + b]))
        twice = keyed[1:][keyed[1:] == keyed[:-1]]
        out[start:stop] = np.bincount(twice // n_elements, minlength=stop - start)
        start = stop
    return out


# ASCII text: the word characters are [A-Za-z0-9_] exactly as \w matches them there, and
# casefolding is lowercasing. Every other byte but the separator becomes a space.
_ASCII_WORDS = bytes(
    c if chr(c).isalnum() or c in (ord("_"), 0) else ord(" ") for c in range(256)
).lower()
_SEPARATOR_BYTES = TEXT_SEPARATOR.encode("ascii")


def _tokens(corpus: str) -> tuple[list[str] | list[bytes], str | bytes]:
    """The casefolded words of the joined texts and each separator, in order (what
    `_TOKEN_RE.findall(corpus.casefold())` gives), and the separator's token. An ASCII corpus
    (the usual one) is split by bytes.translate and bytes.split, as bytes: five times faster
    than the regex."""
    if corpus.isascii():
        spaced = corpus.encode("ascii").replace(_SEPARATOR_BYTES, b" " + _SEPARATOR_BYTES + b" ")
        return spaced.translate(_ASCII_WORDS).split(), _SEPARATOR_BYTES
    return _TOKEN_RE.findall(corpus.casefold()), TEXT_SEPARATOR


def _word_numbers(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Each text's casefolded \\w+ words, numbered exactly (one dictionary, no hashing): the
    number of words per text and all the numbers, texts in order. All texts are tokenized at
    once over the joined text (the separator is no word character)."""
    number: defaultdict[str | bytes, int] = defaultdict(itertools.count().__next__)
    corpus = TEXT_SEPARATOR.join(texts)
    if corpus.count(TEXT_SEPARATOR) == max(len(texts) - 1, 0):
        tokens, separator = _tokens(corpus)
        number[separator]  # number 0
        ids = np.fromiter(map(number.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        del tokens
        bounds = np.flatnonzero(ids == 0)
        lengths = np.diff(np.r_[-1, bounds, len(ids)]) - 1
        return lengths, ids[ids != 0] - 1, len(number) - 1
    # A text holds the separator: tokenize text by text.
    words = [_WORD_RE.findall(text.casefold()) for text in texts]
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(texts))
    flat = np.fromiter(
        map(number.__getitem__, itertools.chain.from_iterable(words)),
        dtype=np.int64,
        count=int(lengths.sum()),
    )
    return lengths, flat, len(number)


def _shingle_pairs(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Each text's distinct word n-grams as (text, element) pairs, elements numbered 0..k-1,
    and k: the same sets as `shingles` gives up to renaming. Words are numbered exactly
    (`_word_numbers`), n-grams are those numbers combined exactly, and a text of fewer than n
    words is one shorter n-gram (padded with a number no word has)."""
    docs = len(texts)
    lengths, flat, pad = _word_numbers(texts)
    if not len(flat):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    # Each text's words followed by n - 1 pads, so a window never runs into the next text.
    ext_len = lengths + (n - 1)
    ext_start = np.r_[0, np.cumsum(ext_len)[:-1]].astype(np.int64)
    ext = np.full(int(ext_len.sum()), pad, dtype=np.int64)
    ext[np.arange(len(flat)) + np.repeat(np.arange(docs, dtype=np.int64) * (n - 1), lengths)] = flat
    windows = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    first = np.repeat(ext_start, windows) + (
        np.arange(int(windows.sum()), dtype=np.int64)
        - np.repeat(np.cumsum(windows) - windows, windows)
    )
    code = ext[first]
    base = pad + 1
    for k in range(1, n):
        if int(code.max(initial=0) + 1) * base >= 2**62:
            code = _dense(code)[0]  # renumber densely before overflow
        code = code * base + ext[first + k]
    owner = np.repeat(np.arange(docs, dtype=np.int64), windows)
    # One stable sort by code numbers the n-grams and puts a text's repeats of one n-gram side
    # by side (owners stay in order within a code).
    order = np.argsort(code, kind="stable")
    code, owner = code[order], owner[order]
    new_code = np.r_[True, code[1:] != code[:-1]]
    element = np.cumsum(new_code) - 1
    keep = new_code | np.r_[True, owner[1:] != owner[:-1]]
    return owner[keep], element[keep], int(element[-1]) + 1


def jaccard_join_reference(
    sets: list[frozenset[int]], threshold: float
) -> list[tuple[int, int, float]]:
    """The plain-Python prefix-filtering join, kept as the reference `jaccard_join` is tested
    against: every pair of sets with Jaccard >= threshold, exactly.

    Prefix filtering (Chaudhuri et al. 2006; Bayardo et al. "All-Pairs", 2007): order each
    set's elements by global rarity; two sets with Jaccard >= t must share an element among
    the first |x| - ceil(t*|x|) + 1 of each. Only pairs sharing a prefix element are compared.
    """
    if threshold <= 0:
        raise ValueError("threshold must be > 0")
    frequency: Counter = Counter()
    for s in sets:
        frequency.update(s)
    # Rename every element by its rank in the global order (rarest first), so each set's
    # prefix is just its smallest elements: a plain sort, no key function.
    rank = {token: r for r, token in enumerate(sorted(frequency, key=lambda t: (frequency[t], t)))}
    sets = [frozenset(rank[t] for t in s) for s in sets]
    order = sorted((i for i, s in enumerate(sets) if s), key=lambda i: (len(sets[i]), i))
    index: dict[int, list[int]] = defaultdict(list)
    pairs: list[tuple[int, int, float]] = []
    eps = 1e-9
    sizes = [len(s) for s in sets]
    for i in order:
        x = sets[i]
        size = sizes[i]
        prefix = sorted(x)[: size - math.ceil(threshold * size - eps) + 1]
        min_size = threshold * size - eps
        candidates: set[int] = set()
        for token in prefix:
            bucket = index.get(token)
            if bucket:
                candidates.update(j for j in bucket if sizes[j] >= min_size)
        for j in candidates:
            inter = len(x & sets[j])
            sim = inter / (size + sizes[j] - inter)
            if sim >= threshold - eps:
                pairs.append((j, i, sim))
        for token in prefix:
            index[token].append(i)
    return pairs


def build_input_graph(items: list[Item], *, threshold: float, ngram: int) -> InputGraph:
    groups: dict[str, int] = {}
    group_of: list[int] = []
    group_texts: list[str] = []
    for item in items:
        key = item.input_key or input_key(item)
        group = groups.get(key)
        if group is None:
            group = groups[key] = len(group_texts)
            group_texts.append(item.prompt_text)
        group_of.append(group)
    owner, element, distinct = _shingle_pairs(group_texts, ngram)
    edges: dict[int, dict[int, float]] = defaultdict(dict)
    for a, b, sim in _join_pairs(owner, element, len(group_texts), distinct, threshold):
        edges[a][b] = sim
        edges[b][a] = sim
    return InputGraph(group_of=group_of, edges=dict(edges))


def step_near_dedup(
    items: list[Item], graph: InputGraph, *, threshold: float
) -> tuple[list[Item], StepReport]:
    """Greedy in keeper order: an item goes if an already kept item has the same input or a
    near-duplicate input. So no two survivors are near duplicates, and the keeper of each
    cluster is the same on every run."""
    report = StepReport("near_dedup", len(items), 0, extra={"threshold": threshold})
    keys = [keeper_key(item) for item in items]
    group_of = graph.group_of
    edges = graph.edges
    kept_groups: dict[int, int] = {}
    keep = [False] * len(items)
    for index in sorted(range(len(items)), key=keys.__getitem__):
        item = items[index]
        group = group_of[index]
        holder = kept_groups.get(group)
        if holder is None:
            if group in edges:
                near = graph.neighbours(group, threshold)
                holder = next((kept_groups[g] for g in near if g in kept_groups), None)
            reason = "near-duplicate input"
        else:
            reason = "same input"
        if holder is not None:
            report.reasons[reason] += 1
            report.samples.append({"removed": item.example_id, "kept": holder, "why": reason})
            continue
        kept_groups[group] = item.example_id
        keep[index] = True
    kept = [item for item, kept_it in zip(items, keep, strict=True) if kept_it]
    report.count_out = len(kept)
    return kept, report


# ---------------------------------------------------------------------------------------------
# Length


class TokenCounter:
    """Counts tokens with a `tokenizers` tokenizer.json (the target model's), or characters."""

    def __init__(self, tokenizer_path: str | None = None):
        self.tokenizer = None
        if tokenizer_path:
            from tokenizers import Tokenizer  # Rust library: no torch, no transformers

            self.tokenizer = Tokenizer.from_file(tokenizer_path)

    @property
    def unit(self) -> str:
        return "tokens" if self.tokenizer is not None else "chars"

    def count(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(text) for text in texts]
        out: list[int] = []
        for start in range(0, len(texts), 4096):
            encodings = self.tokenizer.encode_batch(
                texts[start : start + 4096], add_special_tokens=False
            )
            out.extend(len(e.ids) for e in encodings)
        return out


def step_length(
    items: list[Item], *, counter: TokenCounter, max_length: int | None, min_target: int = 1
) -> tuple[list[Item], StepReport]:
    report = StepReport("length", len(items), 0, extra={"unit": counter.unit, "max": max_length})
    lengths = counter.count(["\n".join(m["content"] for m in item.messages) for item in items])
    kept = []
    for item, length in zip(items, lengths, strict=True):
        if len(item.target.strip()) < min_target:
            report.reasons["empty target"] += 1
        elif not item.prompt_text.strip():
            report.reasons["empty input"] += 1
        elif max_length is not None and length > max_length:
            report.reasons[f"longer than {max_length} {counter.unit}"] += 1
        else:
            kept.append(item)
    report.count_out = len(kept)
    if lengths:
        report.extra["longest"] = max(lengths)
    return kept, report


# ---------------------------------------------------------------------------------------------
# Balance

BALANCE_DIMENSIONS = ("label", "tag", "source", "queue")


def step_balance(
    items: list[Item], *, caps: dict[str, dict[str, int]], seed: int
) -> tuple[list[Item], StepReport, dict[str, Any]]:
    """Cap how many examples any one label / tag / source / queue keeps ("*" caps every value
    of a dimension). Which ones stay is a seeded draw from content hashes."""
    report = StepReport("balance", len(items), 0)

    def tally(rows: list[Item]) -> dict[str, dict[str, int]]:
        dims = sorted(set(caps) | {"label"})
        out: dict[str, dict[str, int]] = {}
        for dim in dims:
            counter: Counter = Counter()
            for item in rows:
                counter.update(item.values(dim))
            out[dim] = dict(sorted(counter.items()))
        return out

    before = tally(items)
    if not caps:
        report.count_out = len(items)
        return items, report, {"caps": {}, "before": before, "after": before}
    used: dict[str, Counter] = {dim: Counter() for dim in caps}
    keep_ids: set[int] = set()
    for item in sorted(items, key=lambda it: seeded_rank(seed, "balance", it.content_hash)):
        over = None
        for dim, limits in caps.items():
            for value in item.values(dim):
                cap = limits.get(value, limits.get("*"))
                if cap is not None and used[dim][value] >= cap:
                    over = f"{dim}={value} cap {cap}"
                    break
            if over:
                break
        if over:
            report.reasons[over] += 1
            continue
        for dim in caps:
            used[dim].update(item.values(dim))
        keep_ids.add(id(item))
    kept = [item for item in items if id(item) in keep_ids]
    report.count_out = len(kept)
    return kept, report, {"caps": caps, "before": before, "after": tally(kept)}


# ---------------------------------------------------------------------------------------------
# Split and leakage


def step_split(
    items: list[Item], *, seed: int, eval_fraction: float, stratify: str = ""
) -> StepReport:
    """Unstratified: an example is in eval when its seeded hash falls below the fraction, so
    its split never depends on which other examples exist (it keeps its split as data grows).
    Stratified: in each stratum the lowest-ranked round(n * fraction) go to eval."""
    report = StepReport("split", len(items), len(items), extra={"eval_fraction": eval_fraction})
    for item in items:
        item.split = "train"
    if eval_fraction <= 0 or not items:
        return report
    ranks = [seeded_rank(seed, "split", item.content_hash) for item in items]

    def order(index: int) -> tuple[int, str]:
        return ranks[index], items[index].content_hash

    if stratify:
        report.extra["stratify"] = stratify
        strata: dict[str, list[Item]] = defaultdict(list)
        for index in sorted(range(len(items)), key=order):
            item = items[index]
            strata[(item.values(stratify) or [""])[0]].append(item)
        for members in strata.values():
            for item in members[: round(len(members) * eval_fraction)]:
                item.split = "eval"
    else:
        limit = int(eval_fraction * 2**64)
        for item, rank in zip(items, ranks, strict=True):
            if rank < limit:
                item.split = "eval"
    if len(items) >= 2 and not any(item.split == "eval" for item in items):
        items[min(range(len(items)), key=order)].split = "eval"  # a tiny set still gets one
    return report


def step_leakage(
    items: list[Item], graph: InputGraph, group_index: Callable[[Item], int], *, threshold: float
) -> StepReport:
    """Guarantee that no eval input equals or nearly equals a train input: every connected
    cluster of same / near-duplicate inputs that spans both splits moves wholly to train."""
    report = StepReport("leakage", len(items), len(items), extra={"threshold": threshold})
    by_group: dict[int, list[Item]] = defaultdict(list)
    for item in items:
        by_group[group_index(item)].append(item)
    seen: set[int] = set()
    moved = 0
    # A cluster can span both splits only if it has two items: a group of two or more, or a
    # group with a near-duplicate neighbour. Lone items are passed over.
    clusters = (g for g, members in by_group.items() if len(members) > 1 or g in graph.edges)
    for start in sorted(clusters):
        if start in seen:
            continue
        component, stack = [], [start]
        seen.add(start)
        while stack:
            group = stack.pop()
            component.append(group)
            for other in graph.neighbours(group, threshold):
                if other in by_group and other not in seen:
                    seen.add(other)
                    stack.append(other)
        members = [item for g in component for item in by_group[g]]
        if len({item.split for item in members}) > 1:
            for item in members:
                if item.split == "eval":
                    item.split = "train"
                    moved += 1
                    report.samples.append({"moved_to_train": item.example_id})
    report.changed = moved
    if moved:
        report.reasons["eval input duplicates a train input: moved to train"] = moved
    return report


def leaking_pairs(
    items: list[Item], *, threshold: float, ngram: int
) -> list[tuple[int, int, float]]:
    """Independent check: (eval example id, train example id, similarity) for every eval input
    that is the same as, or a near duplicate of, a train input. Empty when the split is clean.
    Compares every eval item with every train item: meant for tests and small sets."""
    graph = build_input_graph(items, threshold=threshold, ngram=ngram)
    out = []
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if a.split != "eval" or b.split != "train":
                continue
            ga, gb = graph.group_of[i], graph.group_of[j]
            sim = 1.0 if ga == gb else graph.edges.get(ga, {}).get(gb)
            if sim is not None and sim >= threshold:
                out.append((a.example_id, b.example_id, sim))
    return out
