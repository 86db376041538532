"""The vectorised near-duplicate join finds exactly the pairs the plain exact join finds.

The leakage guarantee (no eval input is a near duplicate of a train input) rests on the join
missing no pair at or above the threshold, so the fast path is checked against the plain
prefix-filtering join and against brute force, including pairs just above and just below it.
"""

import itertools
import random
from collections import defaultdict

import pytest

from datasets_app import pipeline
from datasets_app.pipeline import jaccard


def brute(sets, threshold):
    return {
        (a, b)
        for a, b in itertools.combinations(range(len(sets)), 2)
        if sets[a]
        and sets[b]
        and len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= threshold - 1e-9
    }


def pairs(found):
    return {(min(a, b), max(a, b)) for a, b, _ in found}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.75, 0.8, 0.9, 1.0])
def test_it_equals_the_reference_join_and_brute_force_on_random_sets(seed, threshold):
    rng = random.Random(seed)
    universe = rng.choice([20, 60, 400])
    sets = [frozenset(rng.sample(range(universe), rng.randint(0, 15))) for _ in range(120)]
    sets += [frozenset(list(s)[:-1]) for s in sets[:40] if len(s) > 3]  # near copies
    sets += [s | {universe + i} for i, s in enumerate(sets[:20])]  # one element more
    fast = pipeline.jaccard_join(sets, threshold)
    assert pairs(fast) == pairs(pipeline.jaccard_join_reference(sets, threshold))
    assert pairs(fast) == brute(sets, threshold)
    for a, b, sim in fast:
        assert a < b
        assert sim == len(sets[a] & sets[b]) / len(sets[a] | sets[b])


def test_pairs_just_above_and_just_below_the_threshold():
    # Sets of 10 sharing k elements: Jaccard k / (20 - k). 0.8 needs k >= 8.9, so 9 shares
    # (0.818) are found and 8 (0.667) are not; 4 of 5 (exactly 0.8) is found at 0.8.
    base = frozenset(range(10))
    nine = frozenset([*range(9), 100])
    eight = frozenset([*range(8), 200, 201])
    four = frozenset(range(4))
    five = frozenset(range(5))
    sets = [base, nine, eight, four, five, frozenset()]
    found = {(a, b): sim for a, b, sim in pipeline.jaccard_join(sets, 0.8)}
    assert (0, 1) in found and found[(0, 1)] == pytest.approx(9 / 11)
    assert (0, 2) not in found and (1, 2) not in found
    assert found[(3, 4)] == 0.8
    assert pairs(pipeline.jaccard_join(sets, 0.8181818)) == {(0, 1)}
    assert pairs(pipeline.jaccard_join(sets, 0.82)) == set()


def test_a_common_prefix_element_shared_by_many_sets_is_handled_in_blocks(monkeypatch):
    monkeypatch.setattr(jaccard, "_PAIR_BLOCK", 7)
    rng = random.Random(3)
    sets = [frozenset({0, *rng.sample(range(1, 30), 4)}) for _ in range(80)]
    for threshold in (0.2, 0.5, 0.8):
        assert pairs(pipeline.jaccard_join(sets, threshold)) == brute(sets, threshold)


def reference_graph(items, threshold, ngram):
    """The join as it was first written: shingle tuples, frozensets, the plain join."""
    groups, texts, group_of = {}, [], []
    for item in items:
        key = pipeline.input_key(item)
        if key not in groups:
            groups[key] = len(texts)
            texts.append(item.prompt_text)
        group_of.append(groups[key])
    vocabulary = {}
    sets = [
        frozenset(vocabulary.setdefault(sh, len(vocabulary)) for sh in pipeline.shingles(t, ngram))
        for t in texts
    ]
    edges = defaultdict(dict)
    for a, b, sim in pipeline.jaccard_join_reference(sets, threshold):
        edges[a][b] = edges[b][a] = sim
    return group_of, dict(edges)


def prompt_items(texts):
    """One item per text, the text as its user prompt."""
    return [
        pipeline.Item(
            example_id=i,
            messages=[{"role": "user", "content": t}, {"role": "assistant", "content": "x"}],
            label="approved",
            weight=1.0,
        )
        for i, t in enumerate(texts)
    ]


WORDS = [
    "claim",
    "cover",
    "excess",
    "roof",
    "storm",
    "policy",
    "renewal",
    "windscreen",
    "flood",
    "garage",
    "premium",
]


@pytest.mark.parametrize("ngram", [1, 2, 3, 5])
def test_the_input_graph_equals_the_reference_on_generated_texts(ngram):
    rng = random.Random(ngram)
    texts = []
    for n in range(300):
        roll = rng.random()
        if texts and roll < 0.3:
            words = rng.choice(texts).split()
            cut = rng.randrange(len(words) + 1)
            texts.append(" ".join([*words[:cut], rng.choice(WORDS), *words[cut:]]))
        elif texts and roll < 0.4:
            texts.append(rng.choice(texts).upper() + "  ")  # same loose input
        else:
            length = rng.choice([0, 1, 2, 3, 4, 8, 15, 30])
            texts.append(" ".join(rng.choice(WORDS) for _ in range(length)) + f" ref {n % 7}")
    texts += ["", "one", "one two", "Ünïcode wörds", "ünïcode WÖRDS", "a-b c_d", "a b c d"]
    items = prompt_items(texts)
    for threshold in (0.5, 0.8, 0.95):
        graph = pipeline.build_input_graph(items, threshold=threshold, ngram=ngram)
        group_of, edges = reference_graph(items, threshold, ngram)
        assert graph.group_of == group_of
        assert graph.edges.keys() == edges.keys()
        for group, near in edges.items():
            assert graph.edges[group] == pytest.approx(near)


def test_ascii_texts_are_tokenized_as_the_regex_does():
    rng = random.Random(7)
    alphabet = "aZ09_ .,;:-'\"!?()[]/\\\t\n\r\x0b\x0c\x01\x1f\x7f" + "abcXYZ" * 4
    texts = ["", "A", "__", "x_y-z", "Tab\tand\nnew lines", "  lead and trail  "]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(300)]
    corpus = pipeline.TEXT_SEPARATOR.join(texts)
    assert corpus.isascii()
    regex = jaccard._TOKEN_RE.findall(corpus.casefold())
    assert [t.decode("ascii") for t in jaccard._tokens(corpus)[0]] == regex
    # A corpus with one non-ASCII character takes the regex itself.
    assert jaccard._tokens(corpus + "é")[0] == jaccard._TOKEN_RE.findall((corpus + "é").casefold())


@pytest.mark.parametrize("ngram", [1, 3])
def test_the_input_graph_of_ascii_texts_equals_the_reference(ngram):
    rng = random.Random(ngram)
    texts = [" ".join(rng.choice(WORDS).title() for _ in range(rng.randrange(1, 12))) + "?"]
    for _ in range(200):
        words = rng.choice(texts).split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS))
        texts.append(" ".join(words) if rng.random() < 0.6 else f"{rng.choice(WORDS)}_{len(texts)}")
    items = prompt_items(texts)
    graph = pipeline.build_input_graph(items, threshold=0.6, ngram=ngram)
    group_of, edges = reference_graph(items, 0.6, ngram)
    assert graph.group_of == group_of and graph.edges.keys() == edges.keys() and edges
    for group, near in edges.items():
        assert graph.edges[group] == pytest.approx(near)
