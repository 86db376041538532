"""The quality pipeline: pure functions over in-memory items, no Django, no database.

Each step takes the surviving items and returns the survivors plus a `StepReport` saying how
many it removed or changed, and why. Every choice (which duplicate is kept, which example goes
to eval, which one a cap drops) depends only on content hashes and the seed, never on database
ids or times, so the same data gives the same version on SQLite and PostgreSQL, run after run.

Order: normalise -> PII -> exact dedup -> near dedup -> length -> balance -> split (+ leakage).
PII is masked before deduplication so that duplicates are judged on what will be trained on.

One module per concern: `items` (items, reports, content hashes), `normalise`, `pii`, `dedup`
(exact and near), `jaccard` (the exact n-gram join near dedup and leakage use), `length`,
`balance`, `split` (with leakage). Callers use the names re-exported here
(`from datasets_app import pipeline; pipeline.step_pii(...)`); a test that patches a module
attribute patches it in the module that defines it (`pipeline.jaccard._PAIR_BLOCK`).
"""

from .balance import BALANCE_DIMENSIONS, step_balance
from .dedup import (
    InputGraph,
    assign_hashes,
    build_input_graph,
    exact_key,
    input_key,
    step_exact_dedup,
    step_near_dedup,
)
from .items import (
    TEXT_SEPARATOR,
    Item,
    StepReport,
    canonical_json,
    content_hash,
    keeper_key,
    seeded_rank,
)
from .jaccard import jaccard_join, jaccard_join_reference, shingles
from .length import TokenCounter, step_length
from .normalise import normalise_text, step_normalise
from .pii import (
    BUILTIN_PII_TYPES,
    PII_TYPE_RE,
    PiiScrubber,
    iban_ok,
    luhn_ok,
    step_pii,
    texts_may_hold_pii,
)
from .split import leaking_pairs, step_leakage, step_split

__all__ = [
    "BALANCE_DIMENSIONS",
    "BUILTIN_PII_TYPES",
    "PII_TYPE_RE",
    "TEXT_SEPARATOR",
    "InputGraph",
    "Item",
    "PiiScrubber",
    "StepReport",
    "TokenCounter",
    "assign_hashes",
    "build_input_graph",
    "canonical_json",
    "content_hash",
    "exact_key",
    "iban_ok",
    "input_key",
    "jaccard_join",
    "jaccard_join_reference",
    "keeper_key",
    "leaking_pairs",
    "luhn_ok",
    "normalise_text",
    "seeded_rank",
    "shingles",
    "step_balance",
    "step_exact_dedup",
    "step_leakage",
    "step_length",
    "step_near_dedup",
    "step_normalise",
    "step_pii",
    "step_split",
    "texts_may_hold_pii",
]
