"""`hearth hw` (this machine) and `hearth fit` (what a model needs here, for any number of GPU layers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import ConfigError
from app.core.load_config import CTX_GRANULARITY, KV_CACHE_TYPES

if TYPE_CHECKING:  # imported where used: every `hearth` command imports this module for its parser
    from app.cli.context import CliContext
    from app.core.gguf_info import ModelInfo
    from app.core.hardware import HardwareInfo


def register(subparsers: argparse._SubParsersAction) -> None:
    hw = subparsers.add_parser("hw", help="CPU, memory, GPUs and the llama.cpp backend Hearth will use")
    hw.add_argument("--json", action="store_true")
    hw.set_defaults(handler=cmd_hw)
    fit = subparsers.add_parser("fit", help="memory a model needs here, and how many layers fit on the GPU")
    fit.add_argument("model", type=Path)
    fit.add_argument("--ctx", type=int, default=4096, help="context size (default 4096; 0 = the model's own)")
    fit.add_argument("--kv", choices=sorted(KV_CACHE_TYPES), default="f16", help="KV cache type")
    fit.add_argument(
        "--rpc", default="", metavar="HOST:PORT,...", help="show the split over these RPC workers and this machine"
    )
    fit.add_argument("--json", action="store_true")
    fit.set_defaults(handler=cmd_fit)


def rpc_line(available: bool) -> str:
    if available:
        return "RPC       available: `hearth rpc-worker` lends this machine; --rpc HOST:PORT splits a model"
    from app.core.rpc import REBUILD_COMMAND

    return f"RPC       not in this llama.cpp build; to add it: {REBUILD_COMMAND}"


def hardware_lines(hw: HardwareInfo) -> list[str]:
    from app.core.gguf_info import format_bytes

    lines = [
        f"CPU       {hw.cpu_name} ({hw.physical_cores} cores, {hw.logical_cores} threads)",
        f"RAM       {format_bytes(hw.total_ram)} ({format_bytes(hw.available_ram)} available)",
        f"Backend   llama.cpp {hw.backend}" + (" (GPU offload available)" if hw.gpu_offload else " (CPU only)"),
    ]
    if not hw.gpus:
        lines.append("GPU       none found: models run on the CPU")
    for gpu in hw.gpus:
        kind = "shared memory" if gpu.unified else "VRAM"
        lines.append(
            f"GPU       {gpu.name} [{gpu.backend_device or gpu.source}]: {format_bytes(gpu.total_bytes)} "
            f"{kind} ({format_bytes(gpu.free_bytes)} free)"
        )
    lines += [f"note      {note}" for note in hw.notes]
    return lines


def cmd_hw(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.hardware import detect_hardware
    from app.core.rpc import REBUILD_COMMAND, rpc_available

    hardware = detect_hardware()
    has_rpc = rpc_available()
    if args.json:
        ctx.print_json(
            {**hardware.to_dict(), "rpc": has_rpc, "rpc_rebuild_command": None if has_rpc else REBUILD_COMMAND}
        )
    else:
        lines = hardware_lines(hardware)
        lines.insert(3, rpc_line(has_rpc))
        for line in lines:
            ctx.print(line)
    return 0


def cmd_fit(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.fit import Fit, auto_gpu_layers, estimate, model_fit
    from app.core.gguf_info import format_bytes, inspect
    from app.core.hardware import detect_hardware

    info = inspect(args.model)
    if args.ctx < 0 or args.ctx % CTX_GRANULARITY:
        raise ConfigError(f"--ctx must be 0 or a multiple of {CTX_GRANULARITY}")
    n_ctx = args.ctx or info.context_length or 4096
    if args.rpc:
        return _fit_rpc(args, ctx, info, n_ctx)
    hardware = detect_hardware()
    verdict, chosen = model_fit(info, hardware, n_ctx, args.kv)
    blocks = info.block_count or 0
    counts = sorted({0, chosen.n_gpu_layers, blocks + 1} if hardware.has_gpu else {0})
    rows = [estimate(info, k, n_ctx, args.kv) for k in counts]
    if args.json:
        ctx.print_json(
            {
                "model": str(args.model),
                "n_ctx": n_ctx,
                "kv_type": args.kv,
                "fit": verdict.value,
                "auto_gpu_layers": auto_gpu_layers(info, hardware, n_ctx, args.kv),
                "layers_total": blocks + 1,
                "estimates": [
                    {
                        "n_gpu_layers": e.n_gpu_layers,
                        "gpu_bytes": e.gpu_bytes,
                        "cpu_bytes": e.cpu_bytes,
                        "kv_bytes": e.kv_gpu + e.kv_cpu,
                        "weights_gpu": e.weights_gpu,
                        "weights_cpu": e.weights_cpu,
                        "compute_gpu": e.compute_gpu,
                        "compute_cpu": e.compute_cpu,
                    }
                    for e in rows
                ],
            }
        )
        return 0
    ctx.print(
        f"{info.display_name} ({info.file_type}, {format_bytes(info.size_bytes)}), context {n_ctx}, KV cache {args.kv}"
    )
    ctx.print(f"{'GPU layers':>10} {'GPU':>10} {'RAM':>10}  (weights + KV cache + compute buffers)")
    for e in rows:
        marker = "  <- auto" if e.n_gpu_layers == chosen.n_gpu_layers and hardware.has_gpu else ""
        ctx.print(
            f"{e.n_gpu_layers:>6}/{blocks + 1:<3} {format_bytes(e.gpu_bytes):>10} {format_bytes(e.cpu_bytes):>10}"
            f"{marker}"
        )
    where = "on the GPU" if verdict is Fit.FITS and hardware.has_gpu else "in RAM"
    ctx.print(f"Verdict: {verdict.label}" + (f" ({where})" if verdict is Fit.FITS else ""))
    return 0


def _fit_rpc(args: argparse.Namespace, ctx: CliContext, info: ModelInfo, n_ctx: int) -> int:
    """`hearth fit MODEL --rpc ...`: which layers each device gets and the memory they take there."""
    from app.core import rpc
    from app.core.gguf_info import format_bytes

    workers = [rpc.query_worker(endpoint) for endpoint in rpc.parse_workers(args.rpc)]
    plan, _ = rpc.plan_split(info, workers, n_ctx, args.kv)
    n_layers = (info.block_count or len(info.layer_bytes)) + 1
    if args.json:
        ctx.print_json(
            {
                "model": str(args.model),
                "n_ctx": n_ctx,
                "kv_type": args.kv,
                "fits": plan.fits,
                "n_gpu_layers": plan.n_gpu_layers,
                "tensor_split": list(plan.tensor_split),
                "layers_total": n_layers,
                "devices": [
                    {
                        "device": share.name,
                        "layers": list(share.layers),
                        "output_layer": n_layers - 1 in share.layers,
                        "weights": share.weights,
                        "kv_bytes": share.kv,
                        "compute": share.compute,
                        "total": share.total,
                        "free_bytes": share.free_bytes,
                        "fits": share.fits,
                    }
                    for share in plan.shares
                ],
            }
        )
        return 0
    ctx.print(
        f"{info.display_name} ({info.file_type}, {format_bytes(info.size_bytes)}), context {n_ctx}, KV cache "
        f"{args.kv}: {n_layers} layers split over this machine and {len(workers)} RPC worker(s)"
    )
    ctx.print(f"{'device':<28} {'layers':<18} {'needs':>10} {'free':>10}  (weights + KV cache + compute buffers)")
    for share in plan.shares:
        layers = rpc.describe_layers(share.layers, n_layers - 1) or "none"
        name = f"{share.name} (this machine)" if not share.name.startswith("RPC ") else share.name
        ctx.print(
            f"{name:<28} {layers:<18} {format_bytes(share.total):>10} {format_bytes(share.free_bytes):>10}"
            + ("" if share.fits else "  <- does not fit")
        )
    short = [share.name for share in plan.shares if not share.fits]
    ctx.print("Verdict: fits" if not short else f"Verdict: does not fit on {', '.join(short)}")
    return 0
