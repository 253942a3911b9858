"""A repo's GGUF files as a user picks them: one option per quantization, split parts as one, with a fit."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from app.core.fit import Fit, fit_from_size

if TYPE_CHECKING:  # imported where used: `hearth --help` imports this module for SORTS
    from app.core.hardware import HardwareInfo

# Hub search orders: the name the user gives (`hearth search --sort`) -> the Hub API's. Here rather than in
# app/core/hub.py, so the command line can offer them without importing huggingface_hub.
SORTS: dict[str, Literal["downloads", "likes", "last_modified"]] = {
    "downloads": "downloads",
    "likes": "likes",
    "updated": "last_modified",
}

# Quantization names as they appear in file names: Q4_K_M, IQ4_XS, Q4_0_4_4, UD-Q4_K_XL, TQ1_0, F16, BF16 ...
# The last match wins ("model-f16-Q4_K_M.gguf" is a Q4_K_M made from an f16).
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q[1-8](?:_[0-9A-Z]{1,4}){0,3}|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP16|F16|F32))"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_PROJECTOR_RE = re.compile(r"(^|[-_.])mmproj([-_.]|$)", re.IGNORECASE)
# The Hub's own rule for an owner or repository name (huggingface_hub validate_repo_id), in ASCII.
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
# Characters no file name may hold on some system Hearth runs on (Windows forbids these; "\" and ":" also
# separate paths and drives there), plus control characters.
_BAD_NAME_CHARS = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))]
)

# Which quantization to suggest first when several fit: quality per byte, the community's usual default first.
PREFERRED_QUANTS = (
    "Q4_K_M", "Q4_K_S", "IQ4_XS", "Q5_K_M", "Q4_0", "IQ4_NL", "Q5_K_S", "Q3_K_L", "Q3_K_M", "IQ3_M",
    "IQ3_XS", "Q6_K", "Q3_K_S", "Q2_K", "IQ2_M", "Q8_0",
)  # fmt: skip


@dataclass(frozen=True)
class MemoryBudget:
    """A machine's memory in four numbers (tests and what-if questions); real answers use detect_hardware()."""

    total_ram: int
    available_ram: int
    vram_total: int = 0
    vram_free: int = 0

    def as_hardware(self) -> HardwareInfo:
        from app.core.hardware import GpuInfo, HardwareInfo

        gpus = (GpuInfo("GPU", self.vram_total, self.vram_free, "budget"),) if self.vram_total else ()
        return HardwareInfo("", 1, 1, self.total_ram, self.available_ram, gpus, "CUDA" if gpus else "CPU", bool(gpus))


def quant_fit(size_bytes: int, hardware: MemoryBudget | HardwareInfo | None = None) -> Fit:
    """Fit of a GGUF of size_bytes on this machine (or the one described): app.core.fit.fit_from_size."""
    from app.core.hardware import current_hardware

    if isinstance(hardware, MemoryBudget):
        hardware = hardware.as_hardware()
    return fit_from_size(size_bytes, hardware or current_hardware())


FitEstimator = Callable[[int], Fit]


def repo_id_problem(repo_id: object) -> str | None:
    """Why repo_id cannot be a Hub repository id (and so a folder under the models folder), or None.

    Local paths are derived from ids the server sends back, so this is where `../..`, absolute paths and
    anything a file system would read specially are refused."""
    if not isinstance(repo_id, str):
        return "not text"
    parts = repo_id.split("/")
    if len(parts) != 2:
        return "not owner/name"
    for part in parts:
        if not _REPO_PART_RE.match(part) or ".." in part or "--" in part or part[0] in ".-" or part[-1] in ".-":
            return f"{part[:100]!r} is not a valid owner or repository name"
    return None


def check_repo_id(repo_id: object) -> str:
    """repo_id when it is a valid Hub id, else ValueError with the reason."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise ValueError(f"invalid repository id {str(repo_id)[:120]!r}: {problem}")
    return str(repo_id)


def remote_path_problem(path: object) -> str | None:
    """Why path (a file's place in a Hub repository) cannot be downloaded safely, or None.

    Every part must be a plain file or folder name on every system: no `..`, no absolute path, no
    backslash or drive letter (`..\\..\\evil.gguf` is a path on Windows), no device names."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        return "not a file path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "leaves its folder"
        if _BAD_NAME_CHARS.search(part) or part[-1] in ". " or len(part.encode("utf-8", "replace")) > 255:
            return f"{part[:100]!r} is not a file name every system accepts"
        if part.split(".")[0].upper() in _WINDOWS_DEVICES:
            return f"{part[:100]!r} is a device name on Windows"
    return None


def quant_name(file_name: str) -> str | None:
    """The quantization named in a GGUF file name ("Q4_K_M"), or None when the name does not say."""
    matches = _QUANT_RE.findall(PurePosixPath(file_name).name.removesuffix(".gguf"))
    if not matches:
        return None
    name = matches[-1].upper()
    return "F16" if name == "FP16" else name


@dataclass(frozen=True)
class RemoteFile:
    """One file in a Hub repository: its path there, size, and checksums (sha256 for LFS files)."""

    path: str
    size: int
    sha256: str | None = None
    git_oid: str | None = None  # the git blob id: the only checksum the Hub gives for a non-LFS file

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "git_oid": self.git_oid}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(str(data["path"]), int(data["size"]), data.get("sha256"), data.get("git_oid"))


@dataclass(frozen=True)
class QuantOption:
    """One downloadable model: a single GGUF or all parts of a split one, with its quantization and fit."""

    name: str  # the file name (the first part's for a split model)
    quant: str  # "Q4_K_M", or "?" when the file name does not say
    files: tuple[RemoteFile, ...]
    fit: Fit
    projector: bool = False  # a vision projector (mmproj), not a model to chat with on its own
    missing_parts: tuple[int, ...] = field(default=())  # split parts the repo lacks (1-based)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1 or bool(self.missing_parts)

    @property
    def complete(self) -> bool:
        return not self.missing_parts

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "quant": self.quant,
            "size": self.size,
            "fit": str(self.fit),
            "projector": self.projector,
            "complete": self.complete,
            "files": [f.to_dict() for f in self.files],
        }


def _group_key(path: str) -> tuple[str, str, int]:
    """(folder, stem, part count) for a split part; (folder, name, 1) for a single file."""
    from app.core.gguf_info import SPLIT_RE

    pure = PurePosixPath(path)
    match = SPLIT_RE.match(pure.name)
    if match:
        return str(pure.parent), match.group("stem"), int(match.group("count"))
    return str(pure.parent), pure.name, 1


def group_gguf_files(files: Iterable[RemoteFile], fit: FitEstimator = quant_fit) -> list[QuantOption]:
    """GGUF files grouped into options (split parts together), models by size then projectors."""
    from app.core.gguf_info import SPLIT_RE

    groups: dict[tuple[str, str, int], dict[int, RemoteFile]] = {}
    for remote in files:
        if not remote.path.lower().endswith(".gguf"):
            continue
        key = _group_key(remote.path)
        match = SPLIT_RE.match(remote.name)
        number = int(match.group("no")) if match else 1
        groups.setdefault(key, {})[number] = remote
    options: list[QuantOption] = []
    for (_folder, _stem, count), parts in groups.items():
        ordered = tuple(parts[n] for n in sorted(parts))
        missing = tuple(n for n in range(1, count + 1) if n not in parts)
        first = ordered[0]
        size = sum(f.size for f in ordered)
        options.append(
            QuantOption(
                name=first.name,
                quant=quant_name(first.path) or quant_name(first.path.rsplit("/", 1)[0]) or "?",
                files=ordered,
                fit=fit(size),
                projector=bool(_PROJECTOR_RE.search(first.name)),
                missing_parts=missing,
            )
        )
    options.sort(key=lambda o: (o.projector, o.size, o.name))
    return options


def recommend(options: Sequence[QuantOption]) -> QuantOption | None:
    """The option to suggest: the preferred quantization that fits, else the smallest that fits at all."""
    models = [o for o in options if not o.projector and o.complete]
    for fit in (Fit.FITS, Fit.TIGHT):
        candidates = [o for o in models if o.fit == fit]
        for quant in PREFERRED_QUANTS:
            for option in candidates:
                if option.quant.removeprefix("UD-") == quant:
                    return option
        if candidates:
            return min(candidates, key=lambda o: o.size)
    return None


def select_option(options: Sequence[QuantOption], *, file: str | None = None, quant: str | None = None) -> QuantOption:
    """The option a user named by file (any part, with or without folder) or by quantization.

    Raises LookupError with a one-line message listing what exists.
    """
    if file:
        wanted = file.strip().lstrip("/")
        for option in options:
            if any(f.path == wanted or f.name == wanted for f in option.files):
                return option
        names = ", ".join(o.name for o in options) or "none"
        raise LookupError(f"no GGUF file named {file!r} (files: {names})")
    if quant:
        matches = [o for o in options if o.quant.upper() == quant.strip().upper()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(o.name for o in matches)
            raise LookupError(f"several {quant.upper()} files ({names}); name the FILE instead")
        quants = ", ".join(sorted({o.quant for o in options if not o.projector})) or "none"
        raise LookupError(f"no {quant.upper()} file (available: {quants})")
    raise LookupError("name a FILE or a --quant")
