"""Losses on the answer (assistant) tokens: of a padded batch, of a packed batch, and the mean
eval loss over examples."""

from __future__ import annotations

from typing import Any

from .arguments import TrainingCancelled, TrainingFailed, TrainingHooks
from .data import IGNORE_INDEX, Example, chunked, collate


def token_losses(model, batch: dict[str, Any], device: str):
    """Per-sequence sum of token losses on the labelled (assistant) tokens, and their counts."""
    import torch
    import torch.nn.functional as F

    ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    losses = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return losses.sum(dim=1), counts.to(torch.float32)


def packed_token_losses(model, batch: dict[str, Any], device: str):
    """Token losses of a `data.pack` batch, one per answer token, in the order of `targets`.

    Logits are computed only where an answer token follows (`logits_to_keep`), so the
    vocabulary projection and the cross-entropy skip the prompt."""
    import torch.nn.functional as F

    inner = unwrap(model)
    mask = batch["attention_mask"].to(device)
    implementation = getattr(inner.config, "_attn_implementation", None) or "sdpa"
    if implementation == "eager":
        dtype = next(inner.parameters()).dtype
        mask = (~mask).to(dtype) * torch_min(dtype)  # additive: 0 where allowed
    elif implementation != "sdpa":
        raise TrainingFailed(
            f"packing needs sdpa or eager attention, not {implementation}: set packing to none"
        )
    logits = model(
        input_ids=batch["input_ids"].to(device),
        position_ids=batch["position_ids"].to(device),
        attention_mask=mask,
        logits_to_keep=batch["keep"].to(device),
        use_cache=False,
    ).logits
    logits = logits.reshape(-1, logits.size(-1)).float()
    return F.cross_entropy(logits, batch["targets"].to(device), reduction="none")


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (which has no `config`)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def torch_min(dtype: Any) -> float:
    import torch

    return float(torch.finfo(dtype).min)


def evaluate_loss(
    model,
    examples: list[Example],
    *,
    pad_id: int,
    device: str,
    batch_size: int,
    hooks: TrainingHooks | None = None,
) -> float:
    """Mean token loss over the answers of `examples` (every token counts once)."""
    total, count = evaluate_sums(
        model, examples, pad_id=pad_id, device=device, batch_size=batch_size, hooks=hooks
    )
    return total / max(count, 1.0)


def evaluate_sums(
    model,
    examples: list[Example],
    *,
    pad_id: int,
    device: str,
    batch_size: int,
    hooks: TrainingHooks | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, float]:
    """(sum of answer-token losses, answer tokens) over this rank's share of `examples`: every
    `world_size`-th of them by length, so the ranks' sums add up to the whole set's."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    ordered = sorted(examples, key=lambda e: len(e.input_ids))[rank::world_size]
    with torch.no_grad():
        for group in chunked(ordered, batch_size):
            if hooks is not None and hooks.should_stop():
                raise TrainingCancelled()
            sums, counts = token_losses(model, collate(group, pad_id), device)
            total += float(sums.sum())
            count += float(counts.sum())
    if was_training:
        model.train()
    return total, count
