"""Hearth's copy of GGUF's numbering (app/core/gguf_constants.py) agrees with the `gguf` package's."""

from __future__ import annotations

from enum import IntEnum

import gguf.constants as upstream
import pytest

from app.core import gguf_constants as ours


@pytest.mark.parametrize("name", ["GGUFValueType", "GGMLQuantizationType", "LlamaFileType"])
def test_every_enum_matches_the_gguf_package(name: str) -> None:
    mine: type[IntEnum] = getattr(ours, name)
    theirs: type[IntEnum] = getattr(upstream, name)
    assert {m.name: m.value for m in mine} == {m.name: m.value for m in theirs}


def test_block_sizes_and_alignment_match_the_gguf_package() -> None:
    assert ours.GGUF_DEFAULT_ALIGNMENT == upstream.GGUF_DEFAULT_ALIGNMENT
    mine = {t.name: sizes for t, sizes in ours.GGML_QUANT_SIZES.items()}
    assert mine == {t.name: tuple(sizes) for t, sizes in upstream.GGML_QUANT_SIZES.items()}
