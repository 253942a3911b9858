"""Comparing models on the same prompts: each model loaded once, every prompt answered, and where a
reference answer is given, the cosine similarity between the answer's and the reference's embeddings.

Embeddings come from a GGUF embedding model when one is named (bge, nomic-embed, e5, MiniLM ... through
llama.cpp), else from each compared model's own mean-pooled hidden states (a weaker but self-contained
measure, as a domain fine-tune's card does it). Vectors are L2-normalised, so the similarity is their dot
product, always within [-1, 1].
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from app.core.errors import ConfigError
from app.core.load_config import LoadConfig
from app.core.messages import ChatMessage
from app.core.sampling import SamplingSettings

MAX_PROMPTS = 10_000


@dataclass(frozen=True)
class PromptCase:
    """One line of the prompts file: {"prompt": ..., "reference": ... (optional), "system": ... (optional)}."""

    prompt: str
    reference: str | None = None
    system: str = ""


@dataclass(frozen=True)
class Answer:
    model: str
    index: int  # the prompt's line, from 1
    text: str
    generated_tokens: int
    gen_tps: float
    ttft_ms: float
    finish_reason: str
    similarity: float | None = None  # to the reference; None without one


@dataclass(frozen=True)
class ModelSummary:
    """One row per model: speed, answer length and similarity to the references (mean and median)."""

    model: str
    prompts: int
    mean_tps: float
    median_tps: float
    mean_tokens: float
    median_tokens: float
    mean_similarity: float | None
    median_similarity: float | None
    embeddings: str  # which model gave the vectors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_prompts(path: Path) -> list[PromptCase]:
    """Read a JSONL prompts file; ConfigError names the line of the first bad entry (nothing is run then)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the prompts file {path}: {exc}") from None
    cases = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{Path(path).name} line {number}: not JSON ({exc})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise ConfigError(f'{Path(path).name} line {number}: needs a "prompt" string')
        reference = item.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise ConfigError(f'{Path(path).name} line {number}: "reference" must be a string')
        system = item.get("system", "")
        if not isinstance(system, str):
            raise ConfigError(f'{Path(path).name} line {number}: "system" must be a string')
        cases.append(PromptCase(item["prompt"], reference, system))
    if not cases:
        raise ConfigError(f"{Path(path).name} has no prompts")
    if len(cases) > MAX_PROMPTS:
        raise ConfigError(f"{Path(path).name} has {len(cases)} prompts; at most {MAX_PROMPTS} at once")
    return cases


Progress = Callable[[str], None]


def compare(
    models: Sequence[Path],
    cases: Sequence[PromptCase],
    *,
    config: LoadConfig,
    sampling: SamplingSettings,
    embedding_model: Path | None = None,
    progress: Progress | None = None,
) -> tuple[list[Answer], list[ModelSummary]]:
    """Answer every case with every model (one model in memory at a time), then score the answers."""
    from app.core.conversation import ChatRunner
    from app.core.engine import GenerationStats, TextChunk
    from app.core.llama_engine import LlamaCppEngine

    say = progress or (lambda _text: None)
    answers: list[Answer] = []
    for path in models:
        engine = LlamaCppEngine()
        say(f"loading {Path(path).name}")
        engine.load(Path(path), config)
        try:
            runner = ChatRunner(engine)
            for index, case in enumerate(cases, 1):
                messages = [ChatMessage("system", case.system)] if case.system else []
                messages.append(ChatMessage("user", case.prompt))
                text, stats = "", None
                for event in runner.stream(messages, sampling, conversation=("compare", index)):
                    if isinstance(event, TextChunk):
                        text += event.text
                    elif isinstance(event, GenerationStats):
                        stats = event
                assert stats is not None
                answers.append(
                    Answer(
                        Path(path).name,
                        index,
                        text,
                        stats.generated_tokens,
                        stats.gen_tps,
                        stats.ttft_ms,
                        stats.finish_reason,
                    )
                )
                say(f"{Path(path).name}: {index}/{len(cases)}")
        finally:
            engine.unload()
    answers = _score(answers, cases, models, embedding_model, say)
    return answers, summarize(answers, models, embedding_model)


def _score(
    answers: list[Answer],
    cases: Sequence[PromptCase],
    models: Sequence[Path],
    embedding_model: Path | None,
    say: Progress,
) -> list[Answer]:
    """Cosine similarity of each answer to its case's reference."""
    from app.core.embedder import Embedder

    if not any(case.reference for case in cases):
        return answers
    scored: list[Answer] = []
    for path in models:
        name = Path(path).name
        own = [a for a in answers if a.model == name]
        pairs = [(a, cases[a.index - 1].reference) for a in own]
        with_reference = [(a, ref) for a, ref in pairs if ref]
        say(f"embedding the answers of {name}")
        if embedding_model is not None:
            embedder = Embedder.open(embedding_model)
        else:
            embedder = Embedder.open(path, pooling="mean")
        try:
            vectors = embedder.embed([a.text for a, _ in with_reference] + [ref or "" for _, ref in with_reference])
        finally:
            embedder.close()
        half = len(with_reference)
        similarity = {
            a.index: max(-1.0, min(1.0, float(vectors[i] @ vectors[half + i])))
            for i, (a, _) in enumerate(with_reference)
        }
        scored += [replace(a, similarity=similarity.get(a.index)) for a in own]
    return scored


def summarize(answers: Sequence[Answer], models: Sequence[Path], embedding_model: Path | None) -> list[ModelSummary]:
    rows = []
    for path in models:
        name = Path(path).name
        own = [a for a in answers if a.model == name]
        if not own:
            continue
        tps = [a.gen_tps for a in own]
        tokens = [float(a.generated_tokens) for a in own]
        similarities = [a.similarity for a in own if a.similarity is not None]
        rows.append(
            ModelSummary(
                name,
                len(own),
                round(statistics.fmean(tps), 2),
                round(statistics.median(tps), 2),
                round(statistics.fmean(tokens), 1),
                round(statistics.median(tokens), 1),
                round(statistics.fmean(similarities), 4) if similarities else None,
                round(statistics.median(similarities), 4) if similarities else None,
                Path(embedding_model).name if embedding_model is not None else f"{name} (mean pooling)",
            )
        )
    return rows
