"""Write tiny llama-architecture GGUF files with random weights: test fixtures and the `--self-test` model.

The files are real models to llama.cpp (about 0.5 MB, load in ~15 ms) with a SentencePiece-style vocabulary:
<unk>, <s>, </s>, the 256 byte-fallback tokens llama.cpp requires, then word pieces. Extra control tokens
(`<|im_start|>`, `<end_of_turn>` ...) can be added so chat templates tokenize as they would in real models.
The output is nonsense by design; only structure, speed and control flow are exercised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

_WORDS = (
    "the of and to in is it you that he was for on are with as I his they be at one have this from or had by "
    "hot word but what some we can out other were all there when up use your how said an each she which do "
    "their time if will way about many then them write would like so these her long make thing see him two "
    "has look more day could go come did number sound no most people my over know water than call first who "
    "may down side been now find any new work part take get place made live where after back little only "
    "round man year came show every good me give our under name very through just form sentence great think "
    "say help low line differ turn cause much mean before move right boy old too same tell does set three "
    "want air well also play small end put home read hand port large spell add even land here must big high "
    "such follow act why ask men change went light kind off need house picture try us again animal point "
    "mother world near build self earth father hello json true false null yes"
).split()
_PUNCT = [*".,:;!?'\"()[]{}-_/\\*#@&%$+=<>|~`^", "\n", "\n\n", "  ", "```"]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape and metadata of a tiny model. Defaults load in llama.cpp in ~15 ms."""

    name: str = "Tiny Llama Test"
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    context_length: int = 2048
    chat_template: str | None = None
    chat_templates: dict[str, str] = field(default_factory=dict)  # named variants
    extra_control_tokens: Sequence[str] = ()
    eot_token: str | None = None  # one of extra_control_tokens, written as tokenizer.ggml.eot_token_id
    filler_tokens: int = 0  # extra made-up pieces, to give benchmarks a realistic vocabulary size
    f16: bool = False  # matrices in F16 (as converters write them) instead of F32; norms stay F32
    architecture: str = "llama"
    seed: int = 0
    basename: str | None = None
    size_label: str | None = None
    extra_metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    split_max_tensors: int = 0  # > 0 writes a split model (stem-0000i-of-0000N.gguf) like gguf-split does


def _vocabulary(spec: TinyModelSpec) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TokenType.BYTE)
    pieces: list[str] = []
    for word in _WORDS:
        pieces += ["\u2581" + word, word]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += [str(d) for d in range(10)] + ["\u2581" + str(d) for d in range(10)]
    pieces += [*_PUNCT, "\u2581"]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(TokenType.NORMAL)
    for i in range(spec.filler_tokens):
        tokens.append(f"\u2581w{i:06d}")
        types.append(TokenType.NORMAL)
    for control in spec.extra_control_tokens:
        if control not in seen:
            seen.add(control)
            tokens.append(control)
            types.append(TokenType.CONTROL)
    # SentencePiece scores: higher merges first. Byte tokens and control tokens score 0.
    scores = [0.0 if t != TokenType.NORMAL else -float(i) for i, t in enumerate(types)]
    return tokens, scores, [int(t) for t in types]


def write_tiny_model(path: str | os.PathLike[str], spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny random-weight model to path (F32 weights); returns its path (first part if split)."""
    spec = spec or TinyModelSpec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = _vocabulary(spec)
    writer = GGUFWriter(str(path), spec.architecture, split_max_tensors=spec.split_max_tensors)
    writer.add_type("model")
    writer.add_name(spec.name)
    if spec.basename:
        writer.add_basename(spec.basename)
    if spec.size_label:
        writer.add_size_label(spec.size_label)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(spec.n_embd // spec.n_head)
    writer.add_file_type(LlamaFileType.MOSTLY_F16 if spec.f16 else LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if spec.eot_token is not None:
        writer.add_eot_token_id(tokens.index(spec.eot_token))
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)
    for name, template in spec.chat_templates.items():
        writer.add_string(f"tokenizer.chat_template.{name}", template)
    for key, value in spec.extra_metadata.items():
        _add_value(writer, key, value)
    for name, array in _weights(spec, len(tokens)):
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if spec.split_max_tensors:  # GGUFWriter named the parts itself; the first part stands for the model
        return next(iter(sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))), path)
    return path


def _add_value(writer: GGUFWriter, key: str, value: str | int | float | bool) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_string(key, value)


def _weights(spec: TinyModelSpec, n_vocab: int) -> Iterable[tuple[str, np.ndarray]]:
    """Tensors in numpy shape order (the reverse of ggml's ne), scaled so activations stay finite."""
    rng = np.random.default_rng(spec.seed)
    head_dim = spec.n_embd // spec.n_head
    kv_dim = spec.n_head_kv * head_dim

    dtype = np.float16 if spec.f16 else np.float32

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.08).astype(dtype)

    yield "token_embd.weight", rand(n_vocab, spec.n_embd)
    yield "output_norm.weight", np.ones(spec.n_embd, dtype=np.float32)
    yield "output.weight", rand(n_vocab, spec.n_embd)
    for i in range(spec.n_layer):
        yield f"blk.{i}.attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32)
        yield f"blk.{i}.ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32)
        yield f"blk.{i}.attn_q.weight", rand(spec.n_embd, spec.n_embd)
        yield f"blk.{i}.attn_k.weight", rand(kv_dim, spec.n_embd)
        yield f"blk.{i}.attn_v.weight", rand(kv_dim, spec.n_embd)
        yield f"blk.{i}.attn_output.weight", rand(spec.n_embd, spec.n_embd)
        yield f"blk.{i}.ffn_gate.weight", rand(spec.n_ff, spec.n_embd)
        yield f"blk.{i}.ffn_up.weight", rand(spec.n_ff, spec.n_embd)
        yield f"blk.{i}.ffn_down.weight", rand(spec.n_embd, spec.n_ff)


def write_tiny_lora(
    path: str | os.PathLike[str],
    spec: TinyModelSpec | None = None,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 1,
    strength: float = 4.0,
) -> Path:
    """Write a LoRA adapter GGUF for a tiny model of `spec`'s shape (attention q/v of every block).

    Layout as llama.cpp's convert_lora_to_gguf.py writes it: general.type "adapter", adapter.type "lora",
    adapter.lora.alpha, and per adapted weight W two tensors W.lora_a (rank x n_in) and W.lora_b (n_out x
    rank) in numpy order. `strength` scales the random update so its effect on the output is obvious.
    """
    spec = spec or TinyModelSpec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), spec.architecture)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    head_dim = spec.n_embd // spec.n_head
    outputs = {"attn_q": spec.n_embd, "attn_v": spec.n_head_kv * head_dim}
    for i in range(spec.n_layer):
        for name, n_out in outputs.items():
            a = (rng.standard_normal((rank, spec.n_embd)) * strength).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * strength).astype(np.float32)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
