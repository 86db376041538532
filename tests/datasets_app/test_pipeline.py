"""Every quality step on crafted data; pure Python, no database."""

import itertools
import json
import random

import pytest

from datasets_app import pipeline
from datasets_app.pipeline import Item
from datasets_app.pipeline.items import _canonical_content
from datasets_app.pipeline.normalise import _maybe_untidy
from datasets_app.pipeline.pii import _may_hold_pii


def item(n, prompt, answer="An answer.", *, label="approved", weight=1.0, **kw):
    return Item(
        example_id=n,
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        label=label,
        weight=weight,
        **kw,
    )


def hashed(items):
    pipeline.assign_hashes(items)
    return items


# ---- normalise -------------------------------------------------------------------------------


def test_it_normalises_unicode_controls_and_whitespace():
    decomposed = "Cafe\u0301"  # e + combining acute
    text, why = pipeline.normalise_text(f"  {decomposed}\r\nline\x00two\u200b  \n\n\n\nend\t \x07")
    assert text == "Café\nlinetwo\n\nend"
    assert why == {"line_endings", "unicode_nfc", "control_chars", "whitespace"}


def test_it_keeps_inner_indentation_and_reports_unchanged_items():
    items = [item(1, "def f():\n    return 1"), item(2, "x\u00a0 y ")]
    out, report = pipeline.step_normalise(items)
    assert out[0].messages[0]["content"] == "def f():\n    return 1"
    assert out[1].messages[0]["content"] == "x  y"
    assert report.changed == 1 and report.reasons == {"whitespace": 1}


# ---- PII ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("mail jane.doe+x@mail.example.co.uk now", "mail <EMAIL> now", "EMAIL"),
        ("Call +1 (555) 123-4567 today", "Call <PHONE> today", "PHONE"),
        ("call 555-123-4567.", "call <PHONE>.", "PHONE"),
        ("ring +442079460958", "ring <PHONE>", "PHONE"),
        ("uk 020 7946 0958 ok", "uk <PHONE> ok", "PHONE"),
        ("card 4111 1111 1111 1111 ok", "card <CARD> ok", "CARD"),
        ("card 4111-1111-1111-1111", "card <CARD>", "CARD"),
        ("amex 378282246310005", "amex <CARD>", "CARD"),
        ("iban GB82 WEST 1234 5698 7654 32 paid", "iban <IBAN> paid", "IBAN"),
        ("iban DE89370400440532013000", "iban <IBAN>", "IBAN"),
    ],
)
def test_it_masks_pii_in_several_forms(text, expected, kind):
    cleaned, found = pipeline.PiiScrubber().scrub(text)
    assert cleaned == expected
    assert found == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",  # not a card, and too many digits for a phone
        "iban GB82 WEST 1234 5698 7654 33 bad check",
        "claim filed 2024-11-25, amount 1,500.00, policy 12345",
        "version 1.2.3 and ratio 10.000",
    ],
)
def test_it_leaves_lookalikes_alone(text):
    cleaned, found = pipeline.PiiScrubber().scrub(text)
    assert cleaned == text and not found


def test_luhn_and_iban_checks():
    assert pipeline.luhn_ok("79927398713") and not pipeline.luhn_ok("79927398710")
    assert pipeline.iban_ok("GB82WEST12345698765432") and not pipeline.iban_ok(
        "GB82WEST12345698765431"
    )


def test_it_masks_configured_patterns_and_counts_per_type():
    items = [
        item(1, "Policy POL-123456 for a@b.io", "Sent to a@b.io and c@d.org"),
        item(2, "nothing here", "fine"),
    ]
    out, report, per_type = pipeline.step_pii(items, mode="mask", patterns={"POLICY": r"POL-\d{6}"})
    assert out[0].messages[0]["content"] == "Policy <POLICY> for <EMAIL>"
    assert out[0].messages[1]["content"] == "Sent to <EMAIL> and <EMAIL>"
    assert per_type == {"EMAIL": 3, "POLICY": 1}
    assert report.changed == 1 and report.count_out == 2
    # The step's reasons count the same replacements as the per-type figures.
    assert report.reasons == {"masked EMAIL": 3, "masked POLICY": 1}


def test_it_drops_examples_with_pii_when_asked():
    items = [item(1, "my card is 4111111111111111"), item(2, "clean"), item(3, "x", "mail a@b.io")]
    items[2].rejected_text = "old"
    out, report, per_type = pipeline.step_pii(items, mode="drop")
    assert [i.example_id for i in out] == [2]
    assert report.reasons == {"contains CARD": 1, "contains EMAIL": 1}
    assert per_type == {"CARD": 1, "EMAIL": 1}


def test_it_masks_the_rejected_side_too():
    it = item(1, "q", "fixed", label="corrected")
    it.rejected_text = "write to bob@example.com"
    out, _, per_type = pipeline.step_pii([it], mode="mask")
    assert out[0].rejected_text == "write to <EMAIL>" and per_type == {"EMAIL": 1}


# ---- duplicates --------------------------------------------------------------------------------


def test_it_collapses_duplicates_differing_only_in_whitespace_or_case():
    items = hashed(
        [
            item(1, "What is my  deductible?", "It is $500."),
            item(2, "what is my deductible?", "it IS $500.", weight=2.0),
            item(3, "What is my\ndeductible?  ", "It is $500."),
            item(4, "What is my deductible?", "It is $600."),
        ]
    )
    out, report = pipeline.step_exact_dedup(items)
    assert sorted(i.example_id for i in out) == [2, 4]  # the heaviest of the three is kept
    assert report.count_in - report.count_out == 2
    assert {s["kept"] for s in report.samples} == {2}


def test_the_keeper_does_not_depend_on_input_order_or_ids():
    def run(order, ids):
        items = hashed([item(i, p, a) for i, (p, a) in zip(ids, order, strict=True)])
        out, _ = pipeline.step_exact_dedup(items)
        return sorted(i.content_hash for i in out)

    data = [("Hello there", "Hi"), ("hello THERE", "hi"), ("HELLO there", "HI")]
    first = run(data, [1, 2, 3])
    assert first == run(list(reversed(data)), [30, 20, 10])
    assert len(first) == 1


def test_jaccard_join_is_exact_against_brute_force():
    rng = random.Random(7)
    sets = [frozenset(rng.sample(range(40), rng.randint(0, 12))) for _ in range(150)]
    sets += [frozenset(list(s)[:-1]) for s in sets[:30] if len(s) > 3]  # near copies
    for threshold in (0.5, 0.8, 1.0):
        found = {(min(a, b), max(a, b)) for a, b, _ in pipeline.jaccard_join(sets, threshold)}
        brute = {
            (a, b)
            for a, b in itertools.combinations(range(len(sets)), 2)
            if sets[a] and sets[b] and len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold
        }
        assert found == brute


def test_it_collapses_near_duplicate_inputs_keeping_a_deterministic_one():
    base = "please tell me the excess on my home insurance policy for storm damage to the roof"
    items = hashed(
        [
            item(1, base, "A"),
            item(2, base + " thanks", "B"),  # near duplicate input, other answer
            item(3, base.upper(), "C"),  # same input ignoring case
            item(4, "how do I change the address on my motor policy online", "D"),
        ]
    )
    graph = pipeline.build_input_graph(items, threshold=0.8, ngram=3)
    out, report = pipeline.step_near_dedup(items, graph, threshold=0.8)
    survivors = {i.example_id for i in out}
    assert 4 in survivors and len(survivors) == 2
    keeper = min(items[:3], key=pipeline.keeper_key).example_id
    assert keeper in survivors
    assert report.reasons == {"same input": 1, "near-duplicate input": 1}


def test_a_shared_system_prompt_does_not_make_distinct_questions_near_duplicates():
    system = (
        "You are the support assistant of an insurance company. Answer in two or three short "
        "sentences, start with the direct answer and end with the next step for the customer."
    )
    questions = [
        "How do I add my daughter to the policy on my car?",
        "Is water damage from a burst pipe in the kitchen covered?",
        "Can I move my payment date to the 15th?",
    ]
    items = hashed(
        [
            Item(
                example_id=n,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": "An answer."},
                ],
                label="approved",
                weight=1.0,
            )
            for n, question in enumerate(questions)
        ]
    )
    graph = pipeline.build_input_graph(items, threshold=0.8, ngram=3)
    out, _report = pipeline.step_near_dedup(items, graph, threshold=0.8)
    assert len(out) == 3


# ---- length ------------------------------------------------------------------------------------


def test_it_drops_empty_and_too_long_examples_in_characters():
    items = [item(1, "short", "ok"), item(2, "x" * 50, "y"), item(3, "q", "   "), item(4, " ", "a")]
    out, report = pipeline.step_length(items, counter=pipeline.TokenCounter(), max_length=20)
    assert [i.example_id for i in out] == [1]
    assert report.reasons == {
        "empty target": 1,
        "empty input": 1,
        "longer than 20 chars": 1,
    }
    assert report.extra["unit"] == "chars"


def test_it_counts_tokens_with_a_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    counter = pipeline.TokenCounter(str(path))
    assert counter.unit == "tokens"
    # "the cat sat" + "\n" + "the cat" = 5 words; far more than 5 characters
    items = [item(1, "the cat sat", "the cat"), item(2, "the cat sat on the mat today", "no")]
    out, report = pipeline.step_length(items, counter=counter, max_length=5)
    assert [i.example_id for i in out] == [1]
    assert report.reasons == {"longer than 5 tokens": 1}


# ---- balance -----------------------------------------------------------------------------------


def test_it_caps_labels_and_tags_and_reports_before_and_after():
    items = hashed(
        [item(i, f"q{i}", label="approved", tags=["billing"]) for i in range(10)]
        + [item(100 + i, f"c{i}", label="corrected", tags=["claims"]) for i in range(3)]
    )
    caps = {"label": {"approved": 4}, "tag": {"*": 3}}
    out, report, balance = pipeline.step_balance(items, caps=caps, seed=1)
    assert report.reasons == {"tag=billing cap 3": 7}
    labels = [i.label for i in out]
    assert labels.count("approved") == 3  # the tag cap of 3 binds before the label cap of 4
    assert labels.count("corrected") == 3
    assert balance["before"]["label"] == {"approved": 10, "corrected": 3}
    assert balance["after"]["label"] == {"approved": 3, "corrected": 3}
    assert balance["after"]["tag"] == {"billing": 3, "claims": 3}
    again, _, _ = pipeline.step_balance(hashed([*reversed(items)]), caps=caps, seed=1)
    assert {i.example_id for i in again} == {i.example_id for i in out}


# ---- split and leakage -------------------------------------------------------------------------


def test_split_is_deterministic_from_the_seed_and_content():
    items = hashed([item(i, f"question number {i}") for i in range(400)])
    pipeline.step_split(items, seed=3, eval_fraction=0.2)
    first = {i.example_id: i.split for i in items}
    assert 40 < sum(s == "eval" for s in first.values()) < 120
    shuffled = hashed([item(i, f"question number {i}") for i in reversed(range(400))])
    pipeline.step_split(shuffled, seed=3, eval_fraction=0.2)
    assert {i.example_id: i.split for i in shuffled} == first
    pipeline.step_split(shuffled, seed=4, eval_fraction=0.2)
    assert {i.example_id: i.split for i in shuffled} != first


def test_split_can_stratify_by_label():
    items = hashed(
        [item(i, f"a{i}", label="approved") for i in range(50)]
        + [item(100 + i, f"c{i}", label="corrected") for i in range(10)]
    )
    pipeline.step_split(items, seed=0, eval_fraction=0.2, stratify="label")
    evals = [i.label for i in items if i.split == "eval"]
    assert evals.count("approved") == 10 and evals.count("corrected") == 2


def test_leakage_check_moves_a_near_duplicate_across_the_split_boundary_to_train():
    base = "my windscreen cracked on the motorway yesterday can i claim for the repair"
    items = hashed(
        [item(i, f"entirely separate question about topic {i} and more words") for i in range(30)]
        + [item(500, base, "Yes."), item(501, base + " please", "Yes, you can.")]
    )
    # Find a seed that puts the pair on opposite sides, so the check has work to do.
    for seed in range(200):
        pipeline.step_split(items, seed=seed, eval_fraction=0.5)
        if items[-1].split != items[-2].split:
            break
    else:
        pytest.fail("no seed splits the pair")
    assert pipeline.leaking_pairs(items, threshold=0.8, ngram=3)
    graph = pipeline.build_input_graph(items, threshold=0.8, ngram=3)
    index = {id(it): graph.group_of[n] for n, it in enumerate(items)}
    report = pipeline.step_leakage(items, graph, lambda it: index[id(it)], threshold=0.8)
    assert report.changed == 1
    assert items[-1].split == items[-2].split == "train"
    assert pipeline.leaking_pairs(items, threshold=0.8, ngram=3) == []


def test_content_hash_is_canonical():
    messages = [{"content": "b", "role": "user"}, {"role": "assistant", "content": "é"}]
    same = json.loads(json.dumps(messages))
    assert pipeline.content_hash(messages) == pipeline.content_hash(same)
    assert pipeline.content_hash(messages) != pipeline.content_hash(messages, "x")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": 'a "quoted"\n\\ é \u2028 \x01'}, {"role": "a", "content": ""}],
        [{"role": "user", "content": "x", "name": "extra key"}],
        [{"role": "user", "text": "other keys"}, {"role": "assistant", "content": "y"}],
        [{"role": None, "content": "not a string role"}],
        [{"role": "user", "content": 5}],
        [],
    ],
)
def test_the_written_out_canonical_form_is_the_encoders(messages):
    for rejected in ("", "the original\t<EMAIL>"):
        expected = pipeline.canonical_json({"messages": messages, "rejected": rejected})
        assert _canonical_content(messages, rejected) == expected


@pytest.mark.parametrize("text", ["my reference is 12-34567", "order 1234 5678", "ref 2024-118832"])
def test_two_group_references_are_not_phones(text):
    assert pipeline.PiiScrubber().scrub(text) == (text, {})


# ---- cheap pre-checks ----------------------------------------------------------------------------

_PIECES = [
    "a", "Z", "é", "e\u0301", " ", "  ", "\t", "\n", "\n\n\n", "\r\n", "\x07", "\u200b", "\u00a0",
    "0", "7", "12", "4111 1111 1111 1111", "+44 20 7946 0958", "(020)", "-", ".", "+", "@",
    "x@y.io", "GB82", "WEST", "1234 5698 7654 32", " GB82 WEST 1234 5698 7654 32 ",
    "\u0663\u0664\u0665\u0666\u0667\u0668\u0669", "12-34567", "555-123-4567", "1234567890",
    "  -  ", ")", "(1", "+1", "AB12", "1.234.567", "2024-01-15",
]  # fmt: skip


def _texts(seed, count=3000):
    rng = random.Random(seed)
    return ["".join(rng.choices(_PIECES, k=rng.randint(0, 12))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_texts_the_pre_checks_pass_over_are_ones_the_steps_leave_unchanged(seed):
    """normalise and PII skip texts their pre-check rules out; that must never skip a text the
    full step would change (a skipped text that needed work would be a silent miss)."""
    scrubber = pipeline.PiiScrubber()
    skipped = {"normalise": 0, "pii": 0}
    for text in _texts(seed):
        if not _maybe_untidy(text):
            skipped["normalise"] += 1
            assert pipeline.normalise_text(text) == (text, set()), text
        if not _may_hold_pii(text):
            skipped["pii"] += 1
            assert scrubber.scrub(text) == (text, {}), text
    assert all(skipped.values())  # the checks do rule texts out


def test_pre_checked_steps_give_what_the_plain_per_text_functions_give():
    texts = _texts(7, 2000)
    items = [item(n, a, b) for n, (a, b) in enumerate(zip(texts[::2], texts[1::2], strict=True))]
    for n, it in enumerate(items):
        it.rejected_text = texts[n] if n % 3 == 0 else ""

    def contents(it):
        return [m["content"] for m in it.messages] + [it.rejected_text]

    before = [contents(it) for it in items]
    expected = [[pipeline.normalise_text(t)[0] for t in its] for its in before]
    out, report = pipeline.step_normalise(items)
    assert [contents(it) for it in out] == expected
    assert report.changed == sum(a != b for a, b in zip(before, expected, strict=True)) > 0
    scrubber = pipeline.PiiScrubber()
    expected = [[scrubber.scrub(t)[0] for t in contents(it)] for it in out]
    masked, report, per_type = pipeline.step_pii(out, mode="mask")
    assert [contents(it) for it in masked] == expected
    assert report.changed > 0 and {"CARD", "EMAIL", "PHONE"} <= set(per_type)


def _digit_texts(seed, count=4000):
    """Short strings of digits, separators and a few letters: where the card and phone rules
    (groups, digit counts, "+" and "(") decide."""
    rng = random.Random(seed)
    alphabet = "0123456789" * 3 + "  --..()+" + "aZ@\u0663"
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 28))) for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_digit_strings_the_pii_pre_check_passes_over_are_left_unchanged(seed):
    scrubber = pipeline.PiiScrubber()
    skipped = 0
    for text in _digit_texts(seed):
        if not _may_hold_pii(text):
            skipped += 1
            assert scrubber.scrub(text) == (text, {}), text
    assert skipped > 100


@pytest.mark.parametrize("seed", range(3))
def test_the_all_at_once_pii_pre_check_answers_as_the_per_text_one(seed):
    texts = _texts(seed) + _digit_texts(seed) + ["", "x" * 5000 + "1 2", "1" + " " * 9 + "2 3 4"]
    flags = pipeline.texts_may_hold_pii(texts)
    assert flags.tolist() == [_may_hold_pii(text) for text in texts]
    assert 0 < flags.sum() < len(texts)
    # A text holding the separator is checked text by text, with the same answers.
    texts.append("a\x00b 555-123-4567")
    assert pipeline.texts_may_hold_pii(texts).tolist() == list(map(_may_hold_pii, texts))
    assert pipeline.texts_may_hold_pii([]).tolist() == []


def test_edited_marks_exactly_the_items_whose_messages_the_steps_changed():
    texts = _texts(11, 1200)
    items = [item(n, a, b) for n, (a, b) in enumerate(zip(texts[::2], texts[1::2], strict=True))]
    for n, it in enumerate(items):
        it.rejected_text = texts[n] if n % 3 == 0 else ""
    before = {it.example_id: json.dumps(it.messages) for it in items}
    out, _ = pipeline.step_normalise(items)
    out, _, _ = pipeline.step_pii(out, mode="mask")
    changed = {it.example_id for it in out if json.dumps(it.messages) != before[it.example_id]}
    assert changed and changed != {it.example_id for it in out}
    assert {it.example_id for it in out if it.edited} == changed
