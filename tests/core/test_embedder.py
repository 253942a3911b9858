"""The Embedder on a real embedding model (all-MiniLM-L6-v2 converted by llama.cpp's converter) and on a
generated chat model: vectors match the PyTorch reference, batching changes nothing, limits are reported."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from app.core.embedder import Embedder, prefixes_for
from app.core.errors import GenerationError, ModelFileMissingError, NotAnEmbeddingModelError
from tests.support.embedding_model import DIMENSIONS, reference_embeddings

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Quantum computers use qubits instead of bits.",
]


@pytest.fixture(scope="module")
def embedder(embedding_model_path: Path):
    with Embedder.open(embedding_model_path, threads=2) as opened:
        yield opened


def test_reports_what_the_model_is(embedder: Embedder):
    assert embedder.dimensions == DIMENSIONS
    assert embedder.pooling == "mean"  # from the GGUF (sentence-transformers' 1_Pooling config)
    assert embedder.is_embedding_model
    assert embedder.max_tokens == 512  # the model's training context
    assert embedder.count_tokens("hello world") == 4  # [CLS] hello world [SEP]


def test_vectors_match_the_pytorch_reference_and_are_unit_length(embedder: Embedder):
    ours = embedder.embed(SENTENCES)
    reference = np.array(reference_embeddings(SENTENCES), dtype=np.float32)
    assert ours.shape == (len(SENTENCES), DIMENSIONS)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() > 0.995, cosine  # q8_0 weights; F16 gives > 0.9999
    # and the geometry is the model's: the two eating sentences are each other's nearest neighbour
    similarity = ours @ ours.T
    np.fill_diagonal(similarity, -1)
    assert similarity[0].argmax() == 1 and similarity[1].argmax() == 0


def test_a_text_gets_the_same_vector_alone_or_in_a_crowded_batch(embedding_model_path: Path):
    texts = [f"Sentence number {i} talks about {'rivers' if i % 2 else 'mountains'}." for i in range(40)]
    with Embedder.open(embedding_model_path, threads=2, batch_tokens=256, max_sequences=7) as small_batches:
        batched = small_batches.embed(texts)
    with Embedder.open(embedding_model_path, threads=2) as alone:
        single = np.stack([alone.embed([text])[0] for text in texts[:5]])
    assert (batched[:5] * single).sum(axis=1).min() > 0.9999


def test_long_texts_are_truncated_and_reported(embedding_model_path: Path):
    with Embedder.open(embedding_model_path, threads=2, max_tokens=32) as embedder:
        result = embedder.embed_detailed(["short text", "word " * 200, ""])
    assert result.truncated == [1]
    assert result.token_counts[1] == 32
    assert result.token_counts[0] == 4
    assert result.vectors.shape == (3, DIMENSIONS)
    assert np.isfinite(result.vectors).all()


def test_a_chat_model_is_refused_unless_pooling_is_asked_for(tiny_model: Path):
    with pytest.raises(NotAnEmbeddingModelError, match="not an embedding model"):
        Embedder.open(tiny_model)
    with Embedder.open(tiny_model, pooling="mean") as pooled:  # what /v1/embeddings over a chat model uses
        vectors = pooled.embed(["hello there", "general kenobi"])
        assert not pooled.is_embedding_model
        assert pooled.pooling == "mean"
    assert vectors.shape == (2, pooled.dimensions)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_files_that_are_not_models_get_clear_errors(tmp_path: Path):
    with pytest.raises(ModelFileMissingError):
        Embedder.open(tmp_path / "missing.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(NotAnEmbeddingModelError, match="not a model Hearth can read"):
        Embedder.open(text)


def test_closed_embedder_raises_instead_of_crashing(embedding_model_path: Path):
    embedder = Embedder.open(embedding_model_path, threads=1)
    embedder.close()
    embedder.close()  # idempotent
    with pytest.raises(GenerationError, match="closed"):
        embedder.embed(["x"])


def test_shared_between_threads_calls_are_serialised(embedder: Embedder):
    expected = embedder.embed(SENTENCES)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(embedder.embed(SENTENCES))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(results) == 9
    assert all(np.allclose(r, expected, atol=1e-5) for r in results)


def test_family_prefixes():
    assert prefixes_for("multilingual-e5-small") == ("query: ", "passage: ")
    assert prefixes_for("nomic-embed-text-v1.5.Q8_0.gguf") == ("search_query: ", "search_document: ")
    assert prefixes_for("bge-small-en-v1.5")[0].startswith("Represent this sentence")
    assert prefixes_for("all-MiniLM-L6-v2") == ("", "")
