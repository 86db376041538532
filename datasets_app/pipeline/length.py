"""Length: drop examples with an empty input or answer, or longer than the limit (in the target
model's tokens when a tokenizer is given, else in characters)."""

from __future__ import annotations

from .items import Item, StepReport


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
