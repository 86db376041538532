"""Word-level diffs between an output and its correction."""

import difflib
import re

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def word_diff(original: str, corrected: str) -> list[list[str]]:
    """[[op, original_chunk, corrected_chunk], ...] with op in equal/replace/delete/insert.

    Joining the original chunks gives the original text back, and likewise for the corrected.
    """
    a, b = tokenize(original), tokenize(corrected)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [
        [op, "".join(a[i1:i2]), "".join(b[j1:j2])] for op, i1, i2, j1, j2 in matcher.get_opcodes()
    ]
