"""Realistic-size benchmark models, generated (random weights) and quantized once, cached outside the repo.

Shapes follow real models so speed and memory match them: "1.1b" is TinyLlama-1.1B's shape (the baseline
the issues quote), "3b" a Llama-3.2-3B-like shape. Cache: $HEARTH_BENCH_CACHE or ~/.cache/hearth-bench.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.core.tiny_model import TinyModelSpec, write_tiny_model

# Like the chat models people run (OpenHermes, Qwen ...): ChatML turn markers are special tokens and the
# file carries its chat template, so prompts tokenize the way they do for real models.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = {
    "chat_template": CHATML,
    "extra_control_tokens": ("<|im_start|>", "<|im_end|>"),
    "eot_token": "<|im_end|>",
}
SHAPES: dict[str, TinyModelSpec] = {
    "1.1b": TinyModelSpec(
        name="Bench 1.1B",
        n_embd=2048,
        n_layer=22,
        n_head=32,
        n_head_kv=4,
        n_ff=5632,
        context_length=2048,
        filler_tokens=32000 - 779,
        f16=True,
        **CHAT,
    ),
    "3b": TinyModelSpec(
        name="Bench 3B",
        n_embd=3072,
        n_layer=28,
        n_head=24,
        n_head_kv=8,
        n_ff=8192,
        context_length=4096,
        filler_tokens=32000 - 779,
        f16=True,
        **CHAT,
    ),
}
FTYPE_Q4_K_M = 15


def cache_dir() -> Path:
    path = Path(os.environ.get("HEARTH_BENCH_CACHE", Path.home() / ".cache" / "hearth-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def quantize(src: Path, dst: Path, ftype: int = FTYPE_Q4_K_M, threads: int = 0) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with {rc}")
    tmp.replace(dst)
    return dst


def bench_model(shape: str = "1.1b", quant: str = "Q4_K_M", folder: Path | None = None, keep_f16: bool = True) -> Path:
    """Path of the cached quantized benchmark model, creating it (a minute or two) on first use.

    folder: where to cache it (default cache_dir()); keep_f16=False deletes the F16 source afterwards (2.2 GB
    for the 1.1B shape), for test runs that only need the quantized file.
    """
    folder = folder or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"bench-{shape}-chat-{quant}.gguf"
    if target.exists():
        return target
    f16 = folder / f"bench-{shape}-chat-F16.gguf"
    if not f16.exists():
        started = time.perf_counter()
        write_tiny_model(f16.with_suffix(".tmp"), SHAPES[shape]).replace(f16)
        print(f"wrote {f16.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    started = time.perf_counter()
    quantize(f16, target)
    print(f"quantized to {target.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not keep_f16:
        f16.unlink()
    return target


if __name__ == "__main__":
    for name in sys.argv[1:] or ["1.1b"]:
        print(bench_model(name))
