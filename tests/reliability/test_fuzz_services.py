"""Hypothesis on the services themselves, below the API's serializers: arbitrary unicode (NUL,
lone surrogates, right-to-left marks), huge integers, NaN, nested JSON.

For the database services the property is: a clean refusal (core.errors.ApplicationError:
ValidationFailed and its kin, the service's documented errors) or success, never any other
exception, and a refused call writes nothing (row counts before and after). Each example runs
in a savepoint that is rolled back, so examples do not see each other's rows.

For the dataset pipeline's pure functions the properties are its invariants: normalising is
idempotent and leaves no control character, masking removes the PII it was given and finds
nothing in its own output, exact dedup keeps one item per key in input order, the manifest
hash does not depend on the order of the items.

Deterministic (derandomize=True) and bounded: the file runs in well under a minute.
"""

import json
import random
from collections import Counter

import pytest
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.errors import ApplicationError
from core.models import AuditEvent
from datasets_app import pipeline
from datasets_app.errors import InvalidDatasetRequest
from datasets_app.services import BuildSettings, manifest_hash
from reviews.models import GuidelineVersion, Output, OutputTag, Queue, Review, RoutingRule
from reviews.services import outputs_ingest, queue_claim_next, review_submit, routing_rule_save

from ..factories import OutputFactory, QueueFactory, output_payload

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

# Text that hurts: NUL and other controls, lone surrogates, bidi overrides, BOM, combining marks.
NASTY = [
    "\x00",
    "\ud800",
    "\udfff",
    "\u202e",
    "\ufeff",
    "\u0301",
    "\r",
    "\n",
    "\u2028",
    "\U0001d518",
    "é",
    "\x1b",
    "\u200b",
]
STORABLE = [c for c in NASTY if not "\ud800" <= c <= "\udfff"]
nasty_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(NASTY)), max_size=40
)
any_text = st.one_of(nasty_text, st.text(max_size=20), st.sampled_from(NASTY))
storable_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(STORABLE)),
    max_size=40,
)
huge_ints = st.one_of(st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**400, 2**31, -1, 0]))
numbers = st.one_of(
    huge_ints, st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -0.0])
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, any_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)

WRITTEN = (Output, OutputTag, Review, Queue, RoutingRule, GuidelineVersion, AuditEvent)


class _Rollback(Exception):
    pass


def counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in WRITTEN}


def refused_or_done(call, setup=lambda: None) -> str:
    """Run setup() then call(what setup returned) in a savepoint rolled back afterwards. A
    domain refusal must leave every count as setup left it; anything but success or a domain
    refusal propagates (and fails the test)."""
    outcome = "done"
    try:
        with transaction.atomic():
            prepared = setup()
            before = counts()
            try:
                call(prepared)
            except ApplicationError as refusal:
                assert refusal.message, "a refusal must say why"
                assert counts() == before, f"refused ({refusal.message}) but wrote rows"
                outcome = "refused"
            raise _Rollback
    except _Rollback:
        pass
    return outcome


# -- reviews: ingest ---------------------------------------------------------------------------

ingest_text = any_text
ingest_numbers = st.one_of(
    st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True)
)
ingest_json = st.recursive(
    st.one_of(st.none(), st.booleans(), ingest_numbers, ingest_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ingest_text, inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = {
    "external_id": ingest_text,
    "source": ingest_text,
    "model_name": ingest_text,
    "model_version": ingest_text,
    "input": st.one_of(
        ingest_text,
        st.lists(st.fixed_dictionaries({"role": ingest_text, "content": ingest_text}), max_size=3),
        ingest_json,
    ),
    "output": ingest_text,
    "confidence": ingest_numbers,
    "metadata": ingest_json,
    "tags": st.one_of(st.lists(ingest_text, max_size=4), ingest_json),
    "priority": ingest_numbers,
    "queue": ingest_text,
}


@st.composite
def ingest_payloads(draw):
    """A valid row with some fields replaced by hostile values, sometimes in a list, sometimes
    arbitrary JSON altogether."""
    shape = draw(st.sampled_from(["row", "batch", "json"]))
    if shape == "json":
        return draw(ingest_json)
    rows = []
    for n in range(1 if shape == "row" else draw(st.integers(1, 3))):
        row = output_payload(n)
        for field in draw(st.sets(st.sampled_from(sorted(FIELD_VALUES)), max_size=3)):
            row[field] = draw(FIELD_VALUES[field])
        rows.append(row)
    return rows[0] if shape == "row" else rows


@pytest.mark.django_db
def test_ingest_refuses_cleanly_or_stores(personas):
    engineer = personas["ml_engineer"]
    QueueFactory(name="default-review")
    seen = Counter()

    @FUZZ
    @given(payload=ingest_payloads())
    def run(payload):
        seen[refused_or_done(lambda _: outputs_ingest(payload=payload, actor=engineer))] += 1

    run()
    assert seen["refused"] and seen["done"], seen


@pytest.mark.django_db
@pytest.mark.parametrize(
    "row",
    [
        output_payload(1, output="\udfff"),
        output_payload(2, input=[{"role": "user", "content": "\ud800?"}]),
        output_payload(3, metadata={"k": "\ud800"}),
    ],
    ids=["output", "input", "metadata"],
)
def test_ingest_refuses_a_lone_surrogate(api, personas, row):
    before = counts()
    body = json.dumps([row])  # the surrogate travels escaped ("\\udfff"), as a client sends it
    answer = api(personas["ml_engineer"]).post(
        "/api/outputs/", body, content_type="application/json"
    )
    assert answer.status_code == 400, answer.status_code
    assert "surrogate" in answer.json()["detail"]
    assert counts() == before


@pytest.mark.django_db
def test_ingest_refuses_a_confidence_beyond_a_float(api, personas):
    before = counts()
    row = output_payload(1, confidence=10**400)
    body = json.dumps([row])
    answer = api(personas["ml_engineer"]).post(
        "/api/outputs/", body, content_type="application/json"
    )
    assert answer.status_code == 400, answer.status_code
    assert counts() == before


# -- reviews: decisions ------------------------------------------------------------------------

DECISIONS = st.one_of(
    st.sampled_from(["approve", "correct", "reject", "escalate"]), any_text, st.just("")
)


@pytest.mark.django_db
def test_review_submit_refuses_cleanly_or_records(personas):
    reviewer = personas["reviewer"]
    queue = QueueFactory(name="fuzz", lease_seconds=600)
    seen = Counter()

    @FUZZ
    @given(
        decision=DECISIONS,
        corrected=st.one_of(st.just(""), any_text),
        reason=st.one_of(st.just(""), any_text, st.just("x" * 5001)),
        comment=st.one_of(st.just(""), any_text),
    )
    # Each was a 500 once (the database driver's error): a lone surrogate, and NUL in the
    # comment, which PostgreSQL cannot store.
    @example(decision="reject", corrected="", reason="\ud800", comment="")
    @example(decision="approve", corrected="", reason="", comment="\x00")
    @example(decision="correct", corrected="Fixed \udfff", reason="", comment="")
    def run(decision, corrected, reason, comment):
        def claim():
            OutputFactory(queue=queue, output_text="The model's answer.")
            return queue_claim_next(queue=queue, user=reviewer)

        def submit(lease):
            try:
                review_submit(
                    lease_id=lease.pk,
                    user=reviewer,
                    decision=decision,
                    corrected_output=corrected,
                    reason=reason,
                    comment=comment,
                )
            except ApplicationError:
                lease.refresh_from_db()
                assert lease.ended_at is None, "a refused decision must keep the lease"
                raise

        seen[refused_or_done(submit, setup=claim)] += 1

    run()
    assert seen["refused"] and seen["done"], seen


# -- reviews: routing rules --------------------------------------------------------------------

RULE_VALUES = {
    "name": any_text,
    "position": huge_ints,
    "is_active": st.booleans(),
    "action": st.one_of(st.sampled_from(["route", "auto_accept", "escalate"]), any_text),
    "confidence_below": st.one_of(st.none(), numbers),
    "tag": any_text,
    "metadata_key": any_text,
    "metadata_value": any_text,
    "model_name": any_text,
    "source": any_text,
    "sample_rate": st.one_of(st.none(), numbers),
    "priority_boost": huge_ints,
}


@pytest.mark.django_db
def test_routing_rule_save_refuses_cleanly_or_saves(personas):
    lead = personas["lead"]
    queue = QueueFactory(name="fuzz-rules")
    seen = Counter()

    @FUZZ
    @given(
        values=st.fixed_dictionaries(
            {"name": any_text, "action": RULE_VALUES["action"]},
            optional={k: v for k, v in RULE_VALUES.items() if k not in ("name", "action")},
        ),
        with_queue=st.booleans(),
    )
    @example(values={"name": "\ud800", "action": "escalate"}, with_queue=False)
    @example(values={"name": "r", "action": "route", "tag": "\x00"}, with_queue=True)
    def run(values, with_queue):
        values = {**values, "queue": queue if with_queue else None}
        seen[refused_or_done(lambda _: routing_rule_save(user=lead, **values))] += 1

    run()
    assert seen["refused"] and seen["done"], seen


# -- datasets: build settings ------------------------------------------------------------------

SETTING_NAMES = [
    "queues",
    "tags",
    "sources",
    "model_name",
    "resolved_from",
    "resolved_to",
    "labels",
    "include_auto_accepted",
    "pii",
    "pii_patterns",
    "near_dup_threshold",
    "ngram",
    "max_length",
    "caps",
    "seed",
    "eval_fraction",
    "stratify",
    "no_such_setting",
]


@given(options=st.dictionaries(st.sampled_from(SETTING_NAMES), json_values, max_size=4))
@FUZZ
def test_build_settings_refuse_with_the_field_named_or_accept(options):
    try:
        parsed = BuildSettings.from_options(options)
    except InvalidDatasetRequest as refusal:
        assert refusal.field in options, (refusal.field, options)
        return
    # What was accepted survives its own round trip (the version stores settings as JSON).
    assert BuildSettings.from_json(parsed.as_json()) == parsed


# -- datasets: the pipeline's pure steps ---------------------------------------------------------


@given(text=nasty_text)
@FUZZ
def test_normalising_is_idempotent_and_leaves_no_control_character(text):
    once, _ = pipeline.normalise_text(text)
    twice, reasons = pipeline.normalise_text(once)
    assert twice == once and not reasons
    assert "\r" not in once and "\x00" not in once and "\n\n\n" not in once
    assert once == once.strip()
    assert all(not line.endswith((" ", "\t")) for line in once.split("\n"))


EMAILS = ["alice@example.com", "bob.smith+tag@mail.example.org"]
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004"]


@given(before=nasty_text, after=nasty_text, secret=st.sampled_from(EMAILS + CARDS))
@FUZZ
def test_masking_removes_the_pii_it_is_given_and_finds_none_in_its_output(before, after, secret):
    text = f"{before} x {secret} x {after}"
    masked, found = pipeline.PiiScrubber().scrub(text)
    assert secret not in masked and sum(found.values()) >= 1
    again, found_again = pipeline.PiiScrubber().scrub(masked)
    assert again == masked and not found_again


def _item(n: int, question: str, answer: str, weight: float = 1.0) -> pipeline.Item:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return pipeline.Item(example_id=n, messages=messages, label="approved", weight=weight)


conversations = st.lists(
    st.tuples(
        st.sampled_from(["Q one", "q  ONE", "Q two", "Q\u00a0two", "é", "e\u0301"]),
        st.sampled_from(["A", "a", "B", " A "]),
        st.sampled_from([1.0, 0.5]),
    ),
    max_size=12,
)


@given(rows=conversations, seed=st.integers(0, 2**31 - 1))
@FUZZ
def test_exact_dedup_keeps_one_item_per_key_in_order_whatever_the_input_order(rows, seed):
    items = [_item(n, q, a, w) for n, (q, a, w) in enumerate(rows)]
    pipeline.assign_hashes(items)
    kept, report = pipeline.step_exact_dedup(list(items))
    keys = [pipeline.exact_key(item) for item in kept]
    assert len(keys) == len(set(keys)) == len({pipeline.exact_key(i) for i in items})
    assert [items.index(item) for item in kept] == sorted(items.index(item) for item in kept)
    assert report.count_in - report.count_out == len(items) - len(kept)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    kept_again, _ = pipeline.step_exact_dedup(shuffled)
    assert sorted(i.content_hash for i in kept_again) == sorted(i.content_hash for i in kept)


@given(rows=conversations, seed=st.integers(0, 2**31 - 1))
@FUZZ
def test_the_manifest_hash_ignores_item_order_and_ids(rows, seed):
    """Over what a build hands it: exact duplicates are gone by then (exact dedup is on by
    default; the test below is the case where it is off)."""
    items = [_item(n, q, a, w) for n, (q, a, w) in enumerate(rows)]
    pipeline.assign_hashes(items)
    items, _ = pipeline.step_exact_dedup(items)
    for index, item in enumerate(items):
        item.split = "eval" if index % 4 == 0 else "train"
    build = BuildSettings()
    digest = manifest_hash(build, items)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    for item in shuffled:
        item.example_id += 1000
    assert manifest_hash(build, shuffled) == digest
    if items:
        items[0].weight = items[0].weight + 0.25
        assert manifest_hash(build, items) != digest


def test_the_manifest_hash_ignores_order_among_same_content_items():
    heavy, light = _item(1, "Q", "A", 1.0), _item(2, "Q", "A", 0.5)
    pipeline.assign_hashes([heavy, light])
    heavy.split = light.split = "train"
    build = BuildSettings.from_options({"exact_dedup": False, "near_dup_threshold": None})
    assert manifest_hash(build, [heavy, light]) == manifest_hash(build, [light, heavy])


@given(messages=st.lists(st.fixed_dictionaries({"role": storable_text, "content": storable_text})))
@FUZZ
def test_content_hashes_name_the_content(messages):
    """Examples come from the database, which holds no lone surrogate (the services refuse
    them), so the text here is any storable text."""
    digest = pipeline.content_hash(messages)
    assert len(digest) == 64 and digest == pipeline.content_hash([dict(m) for m in messages])
    if messages:
        changed = [dict(m) for m in messages]
        changed[-1]["content"] += "!"
        assert pipeline.content_hash(changed) != digest
