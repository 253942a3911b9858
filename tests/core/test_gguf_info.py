"""ModelInfo from real files: generated tiny models, split models, and the real gemma-3-270m Q4_K_M."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from app.core.errors import GGUFError
from app.core.gguf_info import ModelInfo, file_type_name, format_bytes, format_params, inspect, split_parts
from app.core.gguf_reader import read_header
from app.core.tiny_model import TinyModelSpec, write_tiny_model

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def test_tiny_model_info_matches_what_was_written(make_tiny_model):
    path = make_tiny_model(
        "tiny-info.gguf",
        name="Info Test",
        basename="info-test",
        size_label="1M",
        n_embd=96,
        n_layer=3,
        n_head=6,
        n_head_kv=2,
        n_ff=160,
        context_length=4096,
        chat_template=TEMPLATE,
        chat_templates={"tool_use": "{{ 'tools' }}"},
        extra_control_tokens=("<|im_start|>", "<|im_end|>"),
        eot_token="<|im_end|>",
    )
    info = inspect(path)
    assert info.architecture == "llama"
    assert (info.name, info.basename, info.size_label) == ("Info Test", "info-test", "1M")
    assert info.file_type == "F32" and not info.file_type_guessed
    assert (info.context_length, info.block_count, info.embedding_length) == (4096, 3, 96)
    assert (info.head_count, info.head_count_kv, info.feed_forward_length) == (6, 2, 160)
    assert info.key_length == info.value_length == 96 // 6
    assert info.chat_template == TEMPLATE
    assert info.chat_templates == {"tool_use": "{{ 'tools' }}"}
    assert (info.bos_token_id, info.bos_token, info.eos_token_id, info.eos_token) == (1, "<s>", 2, "</s>")
    assert info.eot_token == "<|im_end|>" and info.eot_token_id == info.vocab_size - 1
    assert info.add_bos_token is True
    assert info.size_bytes == path.stat().st_size
    assert info.parts == (path,)
    # parameters are counted from tensor shapes: embeddings + output + per-layer weights and norms
    vocab, embd, ff, kv_dim = info.vocab_size, 96, 160, 2 * (96 // 6)
    per_layer = 2 * embd + 2 * embd * embd + 2 * kv_dim * embd + 3 * ff * embd
    assert info.parameters == 2 * vocab * embd + embd + 3 * per_layer
    assert sum(t.n_bytes for t in info.tensors) == info.parameters * 4
    assert info.layer_bytes == (per_layer * 4,) * 3
    assert info.non_layer_bytes == {
        "token_embd.weight": vocab * embd * 4,
        "output_norm.weight": embd * 4,
        "output.weight": vocab * embd * 4,
    }


def test_matches_gguf_reader_on_every_key_and_tensor(make_tiny_model):
    """The package's own (slow) reader is the oracle for everything we decode."""
    path = make_tiny_model("tiny-oracle.gguf", chat_template=TEMPLATE, extra_control_tokens=("<x>",))
    header = read_header(path)
    oracle = gguf.GGUFReader(path)
    for field in oracle.fields.values():
        if field.name.startswith("GGUF."):
            continue
        ours = header.kv[field.name]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            length = len(field.data)
            assert (ours.length if hasattr(ours, "length") else len(ours)) == length, field.name
        else:
            assert ours == pytest.approx(field.contents()), field.name
    assert [t.name for t in header.tensors] == [t.name for t in oracle.tensors]
    for ours, theirs in zip(header.tensors, oracle.tensors):
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.n_bytes == int(theirs.n_bytes)
        assert header.data_offset + ours.offset == int(theirs.data_offset)
    assert header.data_offset == oracle.data_offset


def test_real_gemma_file(gemma_path: Path):
    info = inspect(gemma_path)
    assert info.architecture == "gemma3"
    assert info.name == "Gemma 3 270m" and info.size_label == "270M"
    assert info.file_type == "Q4_K_M"
    assert info.vocab_size == 262144
    assert info.context_length == 32768 and info.block_count == 18 and info.embedding_length == 640
    assert (info.head_count, info.head_count_kv, info.key_length) == (4, 1, 256)
    assert info.sliding_window == 512
    assert info.chat_template is None
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")
    assert 260e6 < info.parameters < 275e6
    assert info.size_bytes == 253113024
    assert {t.ggml_type for t in info.tensors} >= {"Q4_K", "F32"}


def test_real_gemma_metadata_agrees_with_llama_cpp(gemma_path: Path):
    """llama.cpp's own parser (vocab_only load) is the oracle for the scalar metadata of a real file."""
    from llama_cpp import Llama

    llm = Llama(str(gemma_path), vocab_only=True, verbose=False)
    try:
        theirs = llm.metadata
    finally:
        llm.close()
    ours = read_header(gemma_path).kv
    for key, value in theirs.items():
        mine = ours[key]
        if isinstance(mine, float):
            assert float(value) == pytest.approx(mine, rel=1e-6), key
        elif isinstance(mine, bool):
            assert str(mine).lower() == value, key
        elif isinstance(mine, (int, str)):
            assert str(mine) == value, key


def test_split_model_is_one_model_with_all_parts(tmp_path: Path, tiny_model: Path):
    # A real split: llama.cpp's gguf-split writes split.* keys; we write two tiny files the same way.
    parts = []
    for number in (1, 2):
        spec = TinyModelSpec(extra_metadata={"split.no": number - 1, "split.count": 2}, seed=number)
        parts.append(write_tiny_model(tmp_path / f"big-model-0000{number}-of-00002.gguf", spec))
    info = inspect(parts[1])  # any part may be given
    assert info.parts == tuple(parts)
    assert info.path == parts[0]
    assert info.size_bytes == sum(p.stat().st_size for p in parts)
    assert len(info.tensors) == 2 * len(inspect(tiny_model).tensors)
    assert info.parameters == 2 * inspect(tiny_model).parameters
    parts[1].unlink()
    with pytest.raises(GGUFError, match="incomplete.*00002-of-00002"):
        inspect(parts[0])


def test_split_parts_naming():
    assert split_parts(Path("a/x-00002-of-00003.gguf")) == (
        Path("a/x-00001-of-00003.gguf"),
        Path("a/x-00002-of-00003.gguf"),
        Path("a/x-00003-of-00003.gguf"),
    )
    assert split_parts(Path("x.gguf")) is None


def test_missing_file_type_is_guessed_from_tensors(tmp_path: Path):
    writer = gguf.GGUFWriter(str(tmp_path / "nofiletype.gguf"), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = inspect(tmp_path / "nofiletype.gguf")
    assert info.file_type == "F16" and info.file_type_guessed


def test_no_architecture_is_an_error(tmp_path: Path):
    writer = gguf.GGUFWriter(str(tmp_path / "noarch.gguf"), "llama")
    writer.kv_data[0].pop("general.architecture")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match="no general.architecture"):
        inspect(tmp_path / "noarch.gguf")


def test_file_type_names():
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(7) == "Q8_0"
    assert file_type_name(1) == "F16"
    assert file_type_name(0) == "F32"
    assert file_type_name(32) == "BF16"
    assert file_type_name(15 | 1024) == "Q4_K_M"
    assert file_type_name(999) is None


def test_formatting():
    assert format_params(268_098_176) == "268M"
    assert format_params(7_241_732_096) == "7.2B"
    assert format_bytes(253113024) == "241 MiB"
    assert format_bytes(4_368_439_296) == "4.07 GiB"
    assert format_bytes(512) == "512 B"


def test_model_info_json_round_trip(tiny_model: Path):
    info = inspect(tiny_model)
    again = ModelInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info
    slim = ModelInfo.from_dict(json.loads(json.dumps(info.to_dict(with_tensors=False))))
    assert slim.tensors == () and slim.layer_bytes == info.layer_bytes
    assert dataclasses.replace(slim, tensors=info.tensors) == info


def test_copy_of_a_file_reads_the_same(tmp_path: Path, tiny_model: Path):
    shutil.copy(tiny_model, tmp_path / "copy.gguf")
    assert inspect(tmp_path / "copy.gguf").to_dict()["tensors"] == inspect(tiny_model).to_dict()["tensors"]
