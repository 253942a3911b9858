"""Fixtures for the Hub tests: a stand-in Hub serving real tiny GGUF files, a client, a download manager."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.core.downloads import DownloadManager
from app.core.hub import HubClient
from app.core.paths import AppPaths
from app.core.transfer import TransferPolicy
from tests.support.fake_hub import FakeFile, FakeHub, FakeRepo

REPO = "hearth-test/Tiny-Llama-GGUF"
GATED = "hearth-test/Gated-Llama-GGUF"
PRIVATE = "hearth-test/Private-Llama-GGUF"
GOOD_TOKEN = "hf_goodtoken0123456789"  # valid and granted access to the gated and private repos
OTHER_TOKEN = "hf_othertoken987654321"  # valid, but without access to them
Q4 = "Tiny-Llama-Q4_K_M.gguf"
Q8 = "Tiny-Llama-Q8_0.gguf"
BIG = "big/Tiny-Llama-Big-Q6_K.gguf"  # about 12 MB: big enough to drop a connection in the middle
SPLIT = "Tiny-Llama-F16-00001-of-00003.gguf"

# Short timeouts so failure paths finish in well under a second.
FAST = TransferPolicy(stall_timeout=1.0, connect_timeout=2.0, max_failures=3, backoff_initial=0.05, backoff_max=0.2)


@pytest.fixture(scope="session")
def repo_files(make_tiny_model: Callable[..., Path], model_dir: Path) -> dict[str, FakeFile]:
    files = {
        Q4: FakeFile(make_tiny_model("hub-q4.gguf", seed=1, name="Tiny Llama Q4").read_bytes()),
        Q8: FakeFile(make_tiny_model("hub-q8.gguf", seed=2, name="Tiny Llama Q8").read_bytes()),
        BIG: FakeFile(
            make_tiny_model("hub-big.gguf", seed=3, n_embd=256, n_ff=1024, n_layer=3, name="Tiny Big").read_bytes()
        ),
        "README.md": FakeFile(b"---\nlicense: apache-2.0\n---\n# Tiny Llama\n", lfs=False),
    }
    first = make_tiny_model("split/hub-split.gguf", seed=4, split_max_tensors=8, name="Tiny Split")
    for part in sorted(first.parent.glob("hub-split-*.gguf")):
        files[part.name.replace("hub-split", "Tiny-Llama-F16")] = FakeFile(part.read_bytes())
    return files


@pytest.fixture
def fake_hub(repo_files: dict[str, FakeFile]) -> Iterator[FakeHub]:
    repos = [
        FakeRepo(REPO, dict(repo_files), downloads=500, likes=7, last_modified="2024-03-01T00:00:00.000Z"),
        FakeRepo("hearth-test/Popular-Mistral-GGUF", {Q4: repo_files[Q4]}, downloads=9000, likes=3),
        FakeRepo(
            "hearth-test/Liked-Mistral-GGUF",
            {Q4: repo_files[Q4]},
            likes=99,
            last_modified="2025-01-01T00:00:00.000Z",
        ),
        FakeRepo("hearth-test/Not-A-GGUF", {"model.safetensors": FakeFile(b"x" * 100)}, tags=("safetensors",)),
        FakeRepo(GATED, {Q4: repo_files[Q4]}, gated="manual", license="llama3", allowed_tokens={GOOD_TOKEN}),
        FakeRepo(PRIVATE, {Q4: repo_files[Q4]}, private=True, allowed_tokens={GOOD_TOKEN}),
    ]
    with FakeHub(repos, tokens={GOOD_TOKEN, OTHER_TOKEN}) as hub:
        yield hub


@pytest.fixture
def client(fake_hub: FakeHub) -> HubClient:
    return HubClient(fake_hub.url)


@pytest.fixture
def paths(hearth_home: AppPaths) -> AppPaths:
    return hearth_home.ensure()


@pytest.fixture
def manager(paths: AppPaths, client: HubClient) -> Iterator[DownloadManager]:
    manager = DownloadManager(paths, client, policy=FAST)
    yield manager
    manager.close()
