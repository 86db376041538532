"""A version's manifest hash: the same data gives the same hash on every database and run."""

from __future__ import annotations

import hashlib
import math

from .. import pipeline
from .build_settings import BuildSettings

MANIFEST_FORMAT = "signoff-dataset/1"


def manifest_hash(settings: BuildSettings, items: list[pipeline.Item]) -> str:
    """SHA-256 over the canonical content: the settings, then one line per example (split,
    content hash, weight, label) in that order (the weight and label break ties between
    same-content examples when dedup is off). No ids, no times, so the same
    data gives the same hash on SQLite and PostgreSQL and on every run."""
    head = {"format": MANIFEST_FORMAT, "settings": settings.manifest_json()}
    lines = [pipeline.canonical_json(head)]
    # Each line is canonical_json([split, content hash, weight, label]), written out directly
    # (a tenth of the cost, identical bytes) for the usual values; anything unusual is encoded.
    quoted: dict[str, str] = {}

    def quote(text: str) -> str:
        out = quoted.get(text)
        if out is None:
            out = quoted[text] = pipeline.canonical_json(text)
        return out

    hex_digits = set("0123456789abcdef")

    def order(it: pipeline.Item) -> tuple:
        return (it.split, it.content_hash, round(float(it.weight), 6), it.label)

    for item in sorted(items, key=order):
        weight = round(float(item.weight), 6)
        digest = item.content_hash
        if math.isfinite(weight) and len(digest) == 64 and set(digest) <= hex_digits:
            lines.append(f'[{quote(item.split)},"{digest}",{weight!r},{quote(item.label)}]')
        else:
            lines.append(pipeline.canonical_json([item.split, digest, weight, item.label]))
    lines.append("")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
