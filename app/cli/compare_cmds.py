"""`hearth compare`: the same prompts on several models, with speed, answer length and similarity to
reference answers, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from app.cli import flags
from app.cli.context import CliContext
from app.cli.terminal import warn
from app.core.errors import ConfigError
from app.core.sampling import PRESETS, preset


def register(subparsers: argparse._SubParsersAction) -> None:
    compare = subparsers.add_parser(
        "compare", help="answer the same prompts with several models and compare speed and answers"
    )
    compare.add_argument("models", type=Path, nargs="+", metavar="MODEL", help="two or more GGUF models")
    compare.add_argument(
        "--prompts", type=Path, required=True, metavar="FILE.jsonl", help='one {"prompt", "reference"?} per line'
    )
    compare.add_argument(
        "--embed", type=Path, metavar="EMBEDDING_MODEL", help="a GGUF embedding model for the similarity"
    )
    compare.add_argument("--preset", default="deterministic", help=f"sampling preset: {', '.join(PRESETS)}")
    flags.add_load_flags(compare)
    flags.add_sampling_flags(compare)
    output = compare.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object: every answer and the summary")
    output.add_argument("--csv", action="store_true", help="the summary as CSV")
    compare.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.compare import compare, read_prompts

    if len(args.models) < 2:
        raise ConfigError("name at least two models to compare")
    for model in args.models:
        if not model.is_file():
            raise ConfigError(f"{model}: file not found")
    cases = read_prompts(args.prompts)
    sampling = flags.sampling(args, preset(args.preset))
    config = flags.load_config(args, ctx, args.models[0])
    answers, summary = compare(
        args.models,
        cases,
        config=config,
        sampling=sampling,
        embedding_model=args.embed,
        progress=warn,  # model names, from their files
    )
    if args.json:
        ctx.print_json(
            {
                "summary": [row.to_dict() for row in summary],
                "answers": [answer.__dict__ for answer in answers],
            }
        )
        return 0
    if args.csv:
        writer = csv.writer(ctx.out)
        fields = list(summary[0].to_dict()) if summary else []
        writer.writerow(fields)
        for row in summary:
            writer.writerow([row.to_dict()[name] for name in fields])
        return 0
    ctx.print(f"{'model':<32} {'tok/s':>8} {'median':>8} {'tokens':>8} {'similarity':>11} {'median':>8}")
    for row in summary:
        similarity = f"{row.mean_similarity:>11.3f}" if row.mean_similarity is not None else f"{'-':>11}"
        median = f"{row.median_similarity:>8.3f}" if row.median_similarity is not None else f"{'-':>8}"
        ctx.print(
            f"{row.model[:32]:<32} {row.mean_tps:>8.1f} {row.median_tps:>8.1f} {row.mean_tokens:>8.1f}"
            f" {similarity} {median}"
        )
    if summary and summary[0].mean_similarity is not None:
        ctx.print(f"(similarity: cosine of answer and reference embeddings from {summary[0].embeddings})")
    return 0
