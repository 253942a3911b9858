"""LoRA adapters on real GGUF files: which bases an adapter fits (checked against llama.cpp's own verdict),
the library's grouping, refusal with the reason, the effect on greedy output, PEFT folders."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from app.core.engine import PromptRequest, TextChunk
from app.core.errors import ConfigError, LibraryError
from app.core.gguf_info import inspect
from app.core.library import Library
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig, LoraAdapter
from app.core.lora import lora_mismatch, peft_adapter, place_adapters
from app.core.native import llama
from app.core.paths import AppPaths
from app.core.sampling import SamplingSettings
from app.core.tiny_model import TinyModelSpec, write_tiny_lora, write_tiny_model

GREEDY = SamplingSettings(temperature=0.0, top_k=1, seed=1, max_tokens=12, repeat_penalty=1.0)
SMALL = TinyModelSpec(name="Small Base")
WIDE = TinyModelSpec(name="Wide Base", n_embd=128, n_head=4, n_head_kv=2)
DEEP = TinyModelSpec(name="Deep Base", n_layer=4)
GEMMA_LIKE = TinyModelSpec(name="Other Arch", architecture="gemma")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    made = {
        "small": write_tiny_model(folder / "small.gguf", SMALL),
        "wide": write_tiny_model(folder / "wide.gguf", WIDE),
        "deep": write_tiny_model(folder / "deep.gguf", DEEP),
        "lora-small": write_tiny_lora(folder / "lora-small.gguf", SMALL),
        "lora-wide": write_tiny_lora(folder / "lora-wide.gguf", WIDE),
        "lora-deep": write_tiny_lora(folder / "lora-deep.gguf", DEEP),
    }
    return made


def llama_cpp_accepts(base: Path, adapter: Path) -> bool:
    """llama.cpp's own verdict: llama_adapter_lora_init returns NULL for an adapter it refuses."""
    lib = llama()
    params = lib.llama_model_default_params()
    params.n_gpu_layers = 0
    model = lib.llama_model_load_from_file(str(base).encode(), params)
    assert model
    try:
        return bool(lib.llama_adapter_lora_init(model, str(adapter).encode()))
    finally:
        lib.llama_model_free(model)  # frees its adapters too


@pytest.mark.parametrize("adapter", ["lora-small", "lora-wide", "lora-deep"])
@pytest.mark.parametrize("base", ["small", "wide", "deep"])
def test_fit_verdict_agrees_with_llama_cpp(files: dict[str, Path], adapter: str, base: str):
    reason = lora_mismatch(inspect(files[adapter]), inspect(files[base]))
    assert (reason is None) == llama_cpp_accepts(files[base], files[adapter]), reason


def test_mismatch_reasons_name_the_dimensions(files: dict[str, Path]):
    wide_on_small = lora_mismatch(inspect(files["lora-wide"]), inspect(files["small"]))
    assert wide_on_small is not None
    assert "another size" in wide_on_small and "128×128" in wide_on_small and "64×64" in wide_on_small
    assert "embedding length 64" in wide_on_small
    deep_on_small = lora_mismatch(inspect(files["lora-deep"]), inspect(files["small"]))
    assert deep_on_small == "lora-deep.gguf was made for a model with 4 layers; Small Base has 2"
    assert "not a LoRA adapter" in (lora_mismatch(inspect(files["small"]), inspect(files["small"])) or "")


def test_other_architecture_is_refused(tmp_path: Path, files: dict[str, Path]):
    other = write_tiny_lora(tmp_path / "gemma-lora.gguf", GEMMA_LIKE)
    reason = lora_mismatch(inspect(other), inspect(files["small"]))
    assert reason == "gemma-lora.gguf is for gemma models; Small Base is a llama model"


def test_adapter_changes_greedy_output_and_wrong_size_is_refused_before_llama_cpp(files: dict[str, Path]):
    engine = LlamaCppEngine()

    def greedy(loras: tuple[LoraAdapter, ...]) -> str:
        engine.load(files["small"], LoadConfig(n_ctx=256, n_threads=1, loras=loras))
        events = engine.generate(PromptRequest("hello the", sampling=GREEDY))
        text = "".join(e.text for e in events if isinstance(e, TextChunk))
        engine.unload()
        return text

    plain = greedy(())
    adapted = greedy((LoraAdapter(files["lora-small"], 1.0),))
    assert plain and adapted and adapted != plain
    assert greedy((LoraAdapter(files["lora-small"], 0.0),)) == plain  # scale 0: the base's own output
    with pytest.raises(ConfigError, match=r"LoRA adapter refused: lora-wide.gguf was made for a model of another"):
        engine.load(files["small"], LoadConfig(n_ctx=256, loras=(LoraAdapter(files["lora-wide"], 1.0),)))
    assert engine.model is None


def test_library_lists_adapters_under_the_bases_they_fit(hearth_home: AppPaths, files: dict[str, Path]):
    paths = hearth_home.ensure()
    for key in ("small", "wide", "lora-small", "lora-wide", "lora-deep"):
        (paths.models_dir / files[key].name).write_bytes(files[key].read_bytes())
    entries = Library(paths).scan()
    placements = {p.adapter.path.name: p for p in place_adapters(entries)}
    assert set(placements) == {"lora-small.gguf", "lora-wide.gguf", "lora-deep.gguf"}
    assert [b.path.name for b in placements["lora-small.gguf"].bases] == ["small.gguf"]
    assert [b.path.name for b in placements["lora-wide.gguf"].bases] == ["wide.gguf"]
    assert placements["lora-deep.gguf"].bases == ()
    assert "4 layers" in placements["lora-deep.gguf"].reason
    # The shapes survive the library index: a second Library (warm scan, no headers read) says the same.
    again = {p.adapter.path.name: p for p in place_adapters(Library(paths, inspector=_no_reads).scan())}
    assert [b.path.name for b in again["lora-small.gguf"].bases] == ["small.gguf"]


def _no_reads(path: Path):
    raise AssertionError(f"{path} was read again although the index is fresh")


def write_peft_folder(folder: Path, base: str | None = "meta-llama/Llama-2-7b-hf") -> Path:
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    if base:
        config["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return folder


def test_peft_folder_is_recognised_with_the_exact_conversion_command(tmp_path: Path, hearth_home: AppPaths):
    paths = hearth_home.ensure()
    folder = write_peft_folder(tmp_path / "alpaca lora")
    adapter = peft_adapter(folder / "adapter_model.safetensors")
    assert adapter is not None and adapter.folder == folder and adapter.rank == 8 and adapter.alpha == 16.0
    command = shlex.split(adapter.conversion_command(paths.models_dir))
    # The arguments of llama.cpp's convert_lora_to_gguf.py (vendored in llama-cpp-python 0.3.36).
    assert command == [
        "python",
        "convert_lora_to_gguf.py",
        "--base-model-id",
        "meta-llama/Llama-2-7b-hf",
        "--outfile",
        str(paths.models_dir / "alpaca lora-lora-f16.gguf"),
        "--outtype",
        "f16",
        str(folder),
    ]
    local_base = tmp_path / "base-config"
    local_base.mkdir()
    with_local = write_peft_folder(tmp_path / "local", base=str(local_base))
    assert shlex.split(peft_adapter(with_local).conversion_command())[2:4] == ["--base", str(local_base)]  # type: ignore[union-attr]
    unknown = write_peft_folder(tmp_path / "unknown", base=None)
    assert "--base BASE_MODEL_FOLDER" in peft_adapter(unknown).conversion_command()  # type: ignore[union-attr]
    assert peft_adapter(tmp_path) is None


def test_dropping_a_peft_folder_explains_the_conversion(tmp_path: Path, hearth_home: AppPaths):
    paths = hearth_home.ensure()
    folder = write_peft_folder(tmp_path / "my-adapter")
    library = Library(paths)
    for dropped in (folder, folder / "adapter_config.json", folder / "adapter_model.safetensors"):
        with pytest.raises(LibraryError, match="PEFT LoRA adapter") as caught:
            library.import_model(dropped)
        assert "python convert_lora_to_gguf.py --base-model-id meta-llama/Llama-2-7b-hf" in str(caught.value)
    assert list(paths.models_dir.iterdir()) == []  # nothing copied


def test_library_finds_peft_folders_in_its_folders(hearth_home: AppPaths):
    paths = hearth_home.ensure()
    write_peft_folder(paths.models_dir / "adapters" / "alpaca")
    (paths.models_dir / "adapters" / "not-peft").mkdir()
    found = Library(paths).peft_adapters()
    assert [a.name for a in found] == ["alpaca"]
