"""IsolatedEngine: the Engine protocol over a real child Hearth process (tiny generated models, the venv's
llama.cpp): same output as in-process, errors keep their type, cancel and early stops, a child that dies."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from app.core.engine import Engine, GenerationStats, PromptRequest, TextChunk
from app.core.errors import ConfigError, EngineBusyError, GenerationError, ModelFileMissingError, ModelLoadError
from app.core.isolated_engine import IsolatedEngine, engine_for
from app.core.llama_engine import LlamaCppEngine
from app.core.load_config import LoadConfig
from app.core.sampling import SamplingSettings

GREEDY = SamplingSettings(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
pytestmark = pytest.mark.timeout(120)


def collect(engine: Engine, request: PromptRequest) -> tuple[str, GenerationStats]:
    text, stats = "", None
    for event in engine.generate(request):
        if isinstance(event, TextChunk):
            text += event.text
        else:
            stats = event
    assert isinstance(stats, GenerationStats)
    return text, stats


@pytest.fixture
def isolated(tiny_model: Path):
    engine = IsolatedEngine()
    engine.load(tiny_model, LoadConfig(n_ctx=512))
    yield engine
    engine.unload()


def test_same_reply_and_tokens_as_in_process(isolated: IsolatedEngine, tiny_model: Path):
    local = LlamaCppEngine()
    local.load(tiny_model, LoadConfig(n_ctx=512))
    try:
        request = PromptRequest("hello there", sampling=GREEDY)
        assert collect(isolated, request)[0] == collect(local, request)[0] != ""
        assert isolated.tokenize("hello there") == local.tokenize("hello there")
        assert isolated.count_tokens("hello there") == local.count_tokens("hello there")
        assert isolated.context_used == local.context_used > 0
    finally:
        local.unload()
    assert isinstance(isolated, Engine)
    loaded = isolated.model
    assert loaded is not None and loaded.path == tiny_model and loaded.n_ctx == 512 and loaded.backend == "CPU"
    assert isolated.placement == []  # no RPC workers: nothing to report


def test_errors_keep_their_type_and_the_child_goes_on(isolated: IsolatedEngine, tmp_path: Path):
    with pytest.raises(ConfigError, match="invalid grammar"):
        collect(isolated, PromptRequest("hi", sampling=GREEDY, grammar="root ::= ("))
    assert collect(isolated, PromptRequest("hi", sampling=GREEDY))[1].finish_reason == "length"
    with pytest.raises(ModelFileMissingError, match="missing.gguf"):
        isolated.load(tmp_path / "missing.gguf", LoadConfig(n_ctx=512))
    assert isolated.model is None
    with pytest.raises(GenerationError, match="no model is loaded"):
        collect(isolated, PromptRequest("hi", sampling=GREEDY))


def test_cancel_and_an_early_stop(isolated: IsolatedEngine):
    long = SamplingSettings(temperature=0.0, max_tokens=100_000, logit_bias=((2, -100.0),))
    request = PromptRequest("count", sampling=long)
    chunks = 0
    stats = None
    for event in isolated.generate(request):
        if isinstance(event, TextChunk):
            chunks += 1
            if chunks == 3:
                threading.Thread(target=isolated.cancel).start()  # from another thread, as the GUI does
        else:
            stats = event
    assert stats is not None and stats.finish_reason == "cancelled" and chunks >= 3
    stream = isolated.generate(request)
    next(stream)
    with pytest.raises(EngineBusyError):
        isolated.unload()
    stream.close()  # the consumer walks away mid-reply: the child stops and the next request works
    assert collect(isolated, PromptRequest("again", sampling=GREEDY))[1].finish_reason == "length"


def test_a_dying_child_ends_the_reply_with_an_error_and_the_app_goes_on(isolated: IsolatedEngine, tiny_model: Path):
    long = SamplingSettings(temperature=0.0, max_tokens=100_000, logit_bias=((2, -100.0),))
    text, stats = "", None
    for event in isolated.generate(PromptRequest("count", sampling=long)):
        if isinstance(event, TextChunk):
            text += event.text
            if len(text) > 20 and isolated._proc is not None:
                os.kill(isolated._proc.pid, signal.SIGKILL)  # as llama.cpp's abort() would end it
        else:
            stats = event
    assert stats is not None and stats.finish_reason == "error"
    assert "the engine process ended during the reply (signal 9" in (stats.error or "")
    assert "the model was unloaded" in (stats.error or "")
    assert len(text) > 20 and isolated.model is None
    with pytest.raises(GenerationError, match="no model is loaded"):
        isolated.tokenize("x")
    isolated.load(tiny_model, LoadConfig(n_ctx=512))  # a new child
    assert collect(isolated, PromptRequest("hi", sampling=GREEDY))[1].finish_reason == "length"


def test_a_child_that_cannot_start_is_a_load_error(tiny_model: Path):
    engine = IsolatedEngine([sys.executable, "-c", "import sys; sys.stderr.write('boom: no engine here\\n')"])
    with pytest.raises(ModelLoadError, match="the engine process ended while loading .*boom: no engine here"):
        engine.load(tiny_model, LoadConfig(n_ctx=512))
    assert engine.model is None


def test_engine_for_isolates_only_rpc_loads():
    assert isinstance(engine_for(LoadConfig()), LlamaCppEngine)
    assert isinstance(engine_for(LoadConfig(rpc_workers=("127.0.0.1:50052",))), IsolatedEngine)


def test_an_rpc_load_on_an_engine_without_rpc_says_how_to_rebuild(tiny_model: Path):
    import llama_cpp

    from app.core.rpc import REBUILD_COMMAND, RpcWorkerError

    package_lib = Path(llama_cpp.__file__).parent / "lib"
    if any(package_lib.glob("*ggml-rpc*")):  # this venv was rebuilt with RPC: the worker is then probed
        expected = "RPC worker 127.0.0.1:1 is unreachable"
    else:
        expected = f"this llama.cpp build has no RPC backend; rebuild it with: {REBUILD_COMMAND}"
    engine = IsolatedEngine()
    with pytest.raises(RpcWorkerError) as error:
        engine.load(tiny_model, LoadConfig(n_ctx=512, rpc_workers=("127.0.0.1:1",)))
    assert str(error.value).startswith(expected) and engine.model is None
