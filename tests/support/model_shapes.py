"""GGUF files with the header of a real-size model (a 13B, an 8B ...) and no weights: sparse files.

The fit estimate and the load policy only read headers (tensor names, shapes and types), so a 7 GB Q4_K_M
"model" can be a few kilobytes on disk: the header is written, then the file is extended to its full size
without writing (a sparse file), which also passes the reader's check that every tensor lies in the file.
llama.cpp cannot load these (the weights are zeros); they are for estimates and pickers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.constants import GGML_QUANT_SIZES

Q4_K = GGMLQuantizationType.Q4_K
Q6_K = GGMLQuantizationType.Q6_K
F32 = GGMLQuantizationType.F32


def _nbytes(shape: tuple[int, ...], kind: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[kind]
    elements = int(np.prod(shape))
    return elements // block * size


def write_shape_model(
    path: Path,
    *,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_head_kv: int,
    n_vocab: int = 32000,
    context_length: int = 4096,
    name: str = "Shape Model",
) -> Path:
    """A llama-architecture Q4_K_M-typed header of the given shape (token embeddings and output in Q6_K)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"])
    writer.add_vocab_size(n_vocab)
    head_dim = n_embd // n_head
    kv_dim = n_head_kv * head_dim
    tensors: list[tuple[str, tuple[int, ...], GGMLQuantizationType]] = [
        ("token_embd.weight", (n_vocab, n_embd), Q6_K),
        ("output_norm.weight", (n_embd,), F32),
        ("output.weight", (n_vocab, n_embd), Q6_K),
    ]
    for i in range(n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.ffn_norm.weight", (n_embd,), F32),
            (f"blk.{i}.attn_q.weight", (n_embd, n_embd), Q4_K),
            (f"blk.{i}.attn_k.weight", (kv_dim, n_embd), Q4_K),
            (f"blk.{i}.attn_v.weight", (kv_dim, n_embd), Q6_K),
            (f"blk.{i}.attn_output.weight", (n_embd, n_embd), Q4_K),
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), Q4_K),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd), Q4_K),
            (f"blk.{i}.ffn_down.weight", (n_embd, n_ff), Q6_K),
        ]
    for tensor_name, shape, kind in tensors:
        nbytes = _nbytes(shape, kind)
        if kind == F32:
            writer.add_tensor_info(tensor_name, shape, np.dtype(np.float32), nbytes)
        else:  # GGUFWriter takes a quantized tensor's shape in bytes: (rows, bytes per row)
            block, size = GGML_QUANT_SIZES[kind]
            writer.add_tensor_info(
                tensor_name, (*shape[:-1], shape[-1] // block * size), np.dtype(np.uint8), nbytes, raw_dtype=kind
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    alignment = 32
    header = path.stat().st_size
    data_start = -(-header // alignment) * alignment
    total = data_start + sum(-(-_nbytes(s, k) // alignment) * alignment for _, s, k in tensors)
    with path.open("r+b") as handle:
        handle.truncate(total)  # sparse: the weights take no disk space
    return path
