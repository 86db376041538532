"""Chat examples to token ids with the loss on the assistant's answer only, and batches grouped
by length so that almost no compute goes to padding."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .hyperparameters import CHOICES

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX everywhere but the assistant's answer
    weight: float
    example_id: str

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class EncodeStats:
    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0  # nothing of the answer left after truncation


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _ids(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the conversation up to where the assistant starts answering."""
    return _ids(tokenizer, messages, generation_prompt=True)


def encode(tokenizer, row: dict[str, Any], max_length: int) -> tuple[Example | None, bool]:
    """One dataset row -> an Example whose labels cover only the last (assistant) message.

    Long prompts lose their beginning (the question and the answer matter most); an answer that
    still does not fit is cut at the end. Returns (example or None, was_truncated)."""
    messages = row["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"row {row.get('example_id')}: the last message must be the assistant's")
    prompt = prompt_ids(tokenizer, messages[:-1])
    full = _ids(tokenizer, messages, generation_prompt=False)
    if full[: len(prompt)] != prompt:
        # Templates that rewrite earlier turns once an answer follows: fall back to the longest
        # common prefix, so the label mask still starts where the answer starts.
        common = 0
        for a, b in zip(prompt, full, strict=False):
            if a != b:
                break
            common += 1
        prompt = full[:common]
    answer = full[len(prompt) :]
    truncated = False
    if len(full) > max_length:
        truncated = True
        keep_prompt = max(max_length - len(answer), min(len(prompt), max_length // 2))
        prompt = prompt[len(prompt) - keep_prompt :] if keep_prompt > 0 else []
        answer = answer[: max_length - len(prompt)]
    if not answer:
        return None, truncated
    example = Example(
        input_ids=prompt + answer,
        labels=[IGNORE_INDEX] * len(prompt) + answer,
        weight=float(row.get("weight", 1.0) or 1.0),
        example_id=str(row.get("example_id", "")),
    )
    return example, truncated


def encode_all(
    tokenizer, rows: Iterable[dict[str, Any]], max_length: int
) -> tuple[list[Example], EncodeStats]:
    stats = EncodeStats()
    examples = []
    for row in rows:
        stats.rows += 1
        example, truncated = encode(tokenizer, row, max_length)
        stats.truncated += int(truncated)
        if example is None:
            stats.dropped += 1
            continue
        examples.append(example)
    stats.kept = len(examples)
    return examples, stats


def length_grouped_batches(
    lengths: list[int], batch_size: int, *, seed: int, epoch: int, mega: int = 32
) -> list[list[int]]:
    """Batches of indices of similar length, reproducible from (seed, epoch).

    Shuffle, sort within windows of `mega` batches by length, cut into batches, shuffle the
    batches: padding stays small while every epoch still sees a different order. Resuming
    recomputes the same list and skips the batches already done."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * mega
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def shuffled_batches(count: int, batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Batches of indices in a random order, reproducible from (seed, epoch)."""
    order = list(range(count))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest in the batch (batches are length-grouped, so little padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weights = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "weights": weights}


def chunked(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


PACKING_MODES = CHOICES["packing"]


def rank_micro_batches(
    group: list[list[int]], *, rank: int, world_size: int, batch_size: int, merge: bool
) -> list[list[int]]:
    """This rank's forward passes for one optimizer step, whose global batch is `group` (the
    `gradient_accumulation_steps` batches of `batch_size` examples that one process would run).

    Rank r takes every `world_size`-th example of each batch, from the r-th: the same split on
    every rank and after every resume, for any world size. With `merge` (packed batches, which
    carry no padding), consecutive shares are joined while they fit `batch_size`, so a rank runs
    about `gradient_accumulation_steps / world_size` passes of up to `batch_size` examples
    instead of as many passes as one process, each smaller. An empty list: this rank has
    nothing in this step (a last batch with fewer examples than ranks)."""
    shares = [batch[rank::world_size] for batch in group]
    shares = [share for share in shares if share]
    if not merge:
        return shares
    merged: list[list[int]] = []
    for share in shares:
        if merged and len(merged[-1]) + len(share) <= batch_size:
            merged[-1] = merged[-1] + share
        else:
            merged.append(list(share))
    return merged


def loss_weight(example: Example) -> float:
    """The example's share of a step's loss denominator: its weight times its answer tokens
    that get predicted (a label at position 0 has nothing before it to predict it)."""
    return example.weight * sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def common_prefix_length(sequences: list[list[int]]) -> int:
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for index in range(shortest):
        token = first[index]
        if any(s[index] != token for s in sequences[1:]):
            return index
    return shortest


def pack(
    examples: list[Example],
    pad_id: int,
    *,
    share_prefix: bool = True,
    row_tokens: int = 1024,
) -> dict[str, Any]:
    """Several examples per row with no padding between them, each attending only to itself.

    A block-diagonal causal mask (4D, True = may attend) and position ids restarting at every
    example make each example see exactly what it would see alone. With `share_prefix`, the
    prompt prefix every example of the batch has in common (a system prompt, usually) sits once
    at the start of each row and every example attends to it: its forward and backward run
    once instead of once per example, and the answer losses are unchanged. The prefix stops
    one token before the earliest answer, so each example's own tokens predict its answer.

    Only positions followed by an answer token get logits (`keep`): the vocabulary projection
    and the cross-entropy, large for a small model, skip the prompt. `targets`/`weights` hold,
    in row-major order of `keep`, the next token and its example's weight."""
    import torch

    prefix = 0
    if share_prefix and len(examples) > 1:
        first_answer = min(
            next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX) for e in examples
        )
        prefix = max(
            0, min(common_prefix_length([e.input_ids for e in examples]), first_answer - 1)
        )
    shared = examples[0].input_ids[:prefix]
    # Rows: the shared prefix, then whole examples (without it) while they fit in `row_tokens`.
    rows: list[list[Example]] = []
    used = 0
    for example in examples:
        size = len(example.input_ids) - prefix
        if not rows or (used + size > row_tokens and len(rows[-1]) > 0):
            rows.append([])
            used = prefix
        rows[-1].append(example)
        used += size
    width = max(prefix + sum(len(e.input_ids) - prefix for e in row) for row in rows)
    count = len(rows)
    ids = torch.full((count, width), pad_id, dtype=torch.long)
    positions = torch.zeros((count, width), dtype=torch.long)
    segments = torch.full((count, width), -1, dtype=torch.long)  # 0: prefix, -1: padding
    keep = torch.zeros((count, width), dtype=torch.bool)
    targets: list[int] = []
    weights: list[float] = []
    for r, row in enumerate(rows):
        if prefix:
            ids[r, :prefix] = torch.tensor(shared)
            positions[r, :prefix] = torch.arange(prefix)
            segments[r, :prefix] = 0
        at = prefix
        for s, example in enumerate(row, start=1):
            own = example.input_ids[prefix:]
            end = at + len(own)
            ids[r, at:end] = torch.tensor(own)
            positions[r, at:end] = torch.arange(prefix, prefix + len(own))
            segments[r, at:end] = s
            for j in range(prefix, len(example.input_ids) - 1):
                label = example.labels[j + 1]
                if label != IGNORE_INDEX:
                    keep[r, at + j - prefix] = True
                    targets.append(label)
                    weights.append(example.weight)
            at = end
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    mask = causal & (query >= 0) & ((key == query) | ((key == 0) & (query >= 0)))
    # A padding position attends to itself: a query row with nothing to attend to gives NaN.
    mask |= torch.eye(width, dtype=torch.bool)
    return {
        "input_ids": ids,
        "position_ids": positions,
        "attention_mask": mask[:, None, :, :],
        "keep": keep,
        "targets": torch.tensor(targets, dtype=torch.long),
        "weights": torch.tensor(weights, dtype=torch.float32),
        "processed_tokens": int((segments >= 0).sum()),
        "example_tokens": sum(len(e.input_ids) for e in examples),
        "prefix": prefix,
    }
