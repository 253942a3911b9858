"""Quantization names, split grouping, fit and the suggested pick: the logic behind the file list."""

from __future__ import annotations

import pytest

from app.core.hardware import current_hardware
from app.core.hub_files import (
    Fit,
    MemoryBudget,
    RemoteFile,
    group_gguf_files,
    quant_fit,
    quant_name,
    recommend,
    select_option,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "Q4_K_M"),
        ("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("qwen2.5-7b-instruct-q5_k_m-00001-of-00002.gguf", "Q5_K_M"),
        ("gemma-2-9b-it-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("DeepSeek-R1-UD-Q2_K_XL.gguf", "UD-Q2_K_XL"),
        ("model-f16.gguf", "F16"),
        ("model-fp16.gguf", "F16"),
        ("Llama-3.2-1B-Instruct-BF16.gguf", "BF16"),
        ("ggml-model-Q8_0.gguf", "Q8_0"),
        ("tinyllama-1.1b-chat-v1.0.Q3_K_L.gguf", "Q3_K_L"),
        ("model-f16-Q4_K_M.gguf", "Q4_K_M"),  # made from f16: the last name wins
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("llama-2-7b.gguf", None),
        ("Qwen2-7B.gguf", None),  # "Q" not followed by a digit quant pattern in a word
    ],
)
def test_quant_name_from_file_names_seen_on_the_hub(name, quant):
    assert quant_name(name) == quant


def files(*specs):
    return [RemoteFile(path, size, sha256=f"{i:064x}") for i, (path, size) in enumerate(specs)]


def test_split_parts_are_one_option_with_the_summed_size():
    listing = files(
        ("Q4_K_M/model-Q4_K_M-00002-of-00002.gguf", 3 * GIB),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", 4 * GIB),
        ("model-Q2_K.gguf", 2 * GIB),
        ("README.md", 100),
        ("mmproj-model-f16.gguf", GIB),
    )
    options = group_gguf_files(listing, fit=lambda size: Fit.FITS)
    assert [o.quant for o in options] == ["Q2_K", "Q4_K_M", "F16"]
    split = options[1]
    assert split.is_split and split.complete
    assert split.name == "model-Q4_K_M-00001-of-00002.gguf"
    assert [f.name for f in split.files] == [
        "model-Q4_K_M-00001-of-00002.gguf",
        "model-Q4_K_M-00002-of-00002.gguf",
    ]
    assert split.size == 7 * GIB
    assert options[-1].projector  # vision projectors come last, flagged


def test_a_split_model_with_a_missing_part_is_flagged_incomplete():
    options = group_gguf_files(files(("m-Q8_0-00001-of-00003.gguf", 10), ("m-Q8_0-00003-of-00003.gguf", 10)))
    assert options[0].missing_parts == (2,)
    assert not options[0].complete
    assert recommend(options) is None


def test_quant_name_falls_back_to_the_folder():
    options = group_gguf_files(files(("Q5_K_M/model-00001-of-00001.gguf", 10)))
    assert options[0].quant == "Q5_K_M"


def test_fit_compares_weights_plus_overhead_with_available_and_total_memory():
    machine = MemoryBudget(total_ram=16 * GIB, available_ram=8 * GIB)
    assert quant_fit(4 * GIB, machine) is Fit.FITS
    assert quant_fit(10 * GIB, machine) is Fit.TIGHT  # after closing other programs
    assert quant_fit(20 * GIB, machine) is Fit.TOO_BIG
    with_gpu = MemoryBudget(total_ram=16 * GIB, available_ram=8 * GIB, vram_total=12 * GIB, vram_free=12 * GIB)
    assert (
        quant_fit(17 * GIB, with_gpu) is Fit.PARTLY
    )  # about 11 GiB on the GPU (after the CUDA context), the rest in RAM
    assert quant_fit(8 * GIB, with_gpu) is Fit.FITS


def test_fit_defaults_to_this_machines_memory():
    budget = current_hardware()
    assert 0 < budget.available_ram <= budget.total_ram
    assert quant_fit(1024) is Fit.FITS
    assert quant_fit(budget.total_ram * 4) is Fit.TOO_BIG


def test_recommend_prefers_q4_k_m_among_what_fits_else_the_smallest_that_does():
    listing = files(("m.Q2_K.gguf", 3), ("m.Q4_K_M.gguf", 5), ("m.Q8_0.gguf", 9), ("m.F16.gguf", 17))
    assert recommend(group_gguf_files(listing, fit=lambda s: Fit.FITS)).quant == "Q4_K_M"
    small_machine = group_gguf_files(listing, fit=lambda s: Fit.FITS if s < 5 else Fit.TOO_BIG)
    assert recommend(small_machine).quant == "Q2_K"
    assert recommend(group_gguf_files(listing, fit=lambda s: Fit.TOO_BIG)) is None
    odd = group_gguf_files(files(("m.gguf", 3)), fit=lambda s: Fit.TIGHT)
    assert recommend(odd).name == "m.gguf"


def test_select_by_file_part_or_quant_with_clear_errors():
    listing = files(("a/m-Q4_K_M-00001-of-00002.gguf", 5), ("a/m-Q4_K_M-00002-of-00002.gguf", 5), ("m.Q8_0.gguf", 9))
    options = group_gguf_files(listing, fit=lambda s: Fit.FITS)
    assert select_option(options, file="m-Q4_K_M-00002-of-00002.gguf").quant == "Q4_K_M"  # any part
    assert select_option(options, file="a/m-Q4_K_M-00001-of-00002.gguf").is_split
    assert select_option(options, quant="q8_0").name == "m.Q8_0.gguf"
    with pytest.raises(LookupError, match=r"no Q6_K file \(available: Q4_K_M, Q8_0\)"):
        select_option(options, quant="Q6_K")
    with pytest.raises(LookupError, match="no GGUF file named 'nope.gguf'"):
        select_option(options, file="nope.gguf")
    twins = group_gguf_files(files(("x/m.Q4_K_M.gguf", 1), ("y/m.Q4_K_M.gguf", 1)), fit=lambda s: Fit.FITS)
    with pytest.raises(LookupError, match="several Q4_K_M files"):
        select_option(twins, quant="Q4_K_M")
