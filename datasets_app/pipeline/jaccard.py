"""Exact word n-gram Jaccard join: every pair of texts whose n-gram sets are at least this
similar, with no sampling and no hashing (near dedup and leakage are built on it)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict

import numpy as np

from .items import TEXT_SEPARATOR

_WORD_RE = re.compile(r"\w+")
_TOKEN_RE = re.compile(r"\w+|" + TEXT_SEPARATOR)  # words, and the separator between texts


def shingles(text: str, n: int) -> list[tuple[str, ...]]:
    words = _WORD_RE.findall(text.casefold())
    if len(words) < n:
        return [tuple(words)] if words else []
    return list(zip(*(words[i:] for i in range(n)), strict=False))


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
