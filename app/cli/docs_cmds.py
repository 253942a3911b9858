"""`hearth docs`: document collections (add, list, index, remove), search over them, the embedding model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.context import CliContext
from app.cli.terminal import warn
from app.core.errors import DocumentsError

if TYPE_CHECKING:
    from app.core.documents.index import DocumentIndex, Hit
    from app.core.documents.indexer import IndexProgress
    from app.core.embedder import Embedder


def register(subparsers: argparse._SubParsersAction) -> None:
    docs = subparsers.add_parser("docs", help="document collections to chat with (index, search)")
    actions = docs.add_subparsers(dest="docs_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="create a collection or add folders/files to it, and index it")
    add.add_argument("name")
    add.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add.add_argument("--no-index", action="store_true", help="only register the paths; index later")
    _model_options(add)
    add.set_defaults(handler=cmd_add)
    listing = actions.add_parser("list", help="the collections: sources, files, chunks, failures")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    index = actions.add_parser("index", help="index a collection (only what changed since the last time)")
    index.add_argument("name")
    _model_options(index)
    index.set_defaults(handler=cmd_index)
    remove = actions.add_parser("remove", help="remove a collection and its index (your files stay)")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_remove)
    search = actions.add_parser("search", help="the passages that best match a question")
    search.add_argument("name")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="how many passages (default 5)")
    search.add_argument("--json", action="store_true")
    _model_options(search)
    search.set_defaults(handler=cmd_search)
    model = actions.add_parser("model", help="show or set the embedding model used for documents")
    model.add_argument("path", nargs="?", type=Path, help="a GGUF embedding model (bge, nomic-embed, e5 ...)")
    model.add_argument("--clear", action="store_true", help="no embedding model: keyword (BM25) search only")
    model.set_defaults(handler=cmd_model)


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--embedding-model", type=Path, metavar="GGUF", help="instead of the configured one")
    group.add_argument("--no-embeddings", action="store_true", help="keyword (BM25) only")


def open_index(ctx: CliContext) -> DocumentIndex:
    from app.core.documents.index import DocumentIndex

    return DocumentIndex(ctx.paths.documents_db)


def open_embedder(ctx: CliContext, args: argparse.Namespace) -> Embedder | None:
    """The embedding model named on the command line, else the `embedding_model` setting, else None."""
    if getattr(args, "no_embeddings", False):
        return None
    path = getattr(args, "embedding_model", None) or ctx.settings.get("embedding_model")
    if not path:
        return None
    from app.core.embedder import Embedder

    return Embedder.open(Path(path).expanduser())


def cmd_add(args: argparse.Namespace, ctx: CliContext) -> int:
    missing = [str(p) for p in args.paths if not p.expanduser().exists()]
    if missing:
        raise DocumentsError(f"not found: {', '.join(missing)}")
    index = open_index(ctx)
    index.add_collection(args.name, args.paths)
    if args.no_index:
        ctx.print(f"Collection {args.name!r}: {len(index.sources(args.name))} source(s). "
                  f"Index it with `hearth docs index {args.name!r}`.")  # fmt: skip
        return 0
    ctx.print(f"Collection {args.name!r}: {len(index.sources(args.name))} source(s); indexing.")
    return _index(args, ctx, index)


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    index = open_index(ctx)
    collections = index.collections()
    if args.json:
        ctx.print_json([{**c.to_dict(), "failures": index.failures(c.name)} for c in collections])
        return 0
    if not collections:
        ctx.print("No collections yet: `hearth docs add NAME FOLDER...` makes one.")
        return 0
    for c in collections:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.indexed_at)) if c.indexed_at else "never"
        vectors = f"{c.embedded}/{c.chunks} with vectors" if c.chunks else "empty"
        ctx.print(f"{c.name}: {c.files} files, {c.pages} pages, {c.chunks} chunks ({vectors}); indexed {when}")
        for source in c.sources:
            ctx.print(f"    {source}")
        for path, reason in index.failures(c.name):
            ctx.print(f"    could not read {path}: {reason}")
    return 0


def cmd_index(args: argparse.Namespace, ctx: CliContext) -> int:
    index = open_index(ctx)
    index.collection_id(args.name)  # an unknown name fails before a model loads
    return _index(args, ctx, index)


def _index(args: argparse.Namespace, ctx: CliContext, index: DocumentIndex) -> int:
    from app.core.documents.indexer import index_collection

    embedder = open_embedder(ctx, args)
    show = _progress_printer()
    try:
        report = index_collection(index, args.name, embedder=embedder, progress=show)
    finally:
        show(None)
        if embedder is not None:
            embedder.close()
    ctx.print(
        f"{args.name}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.unchanged} unchanged; {report.chunks} chunks, {report.embedded} vectors in {report.seconds:.1f} s"
    )
    if embedder is None:
        ctx.print("No embedding model: keyword (BM25) search only. `hearth docs model FILE.gguf` sets one.")
    if report.vectors_dropped:
        ctx.print("The embedding model changed: every chunk was embedded again.")
    for path, reason in report.failed:
        ctx.print(f"could not read {path}: {reason}")
    return 0


def _progress_printer() -> Any:
    """Progress on stderr: one line rewritten in place on a terminal; otherwise (a pipe, a log) a line
    every 10 % of the files and one per embedding step, so a long run is never silent."""
    live = sys.stderr.isatty()
    shown = [-1, -1]  # the last tenth of the files and the last thousand chunks embedded that were shown

    def show(progress: IndexProgress | None) -> None:
        if progress is None:
            if live:
                sys.stderr.write("\r\x1b[K")
        elif progress.phase == "reading":
            line = f"[{progress.done + 1}/{progress.total}] {Path(progress.path).name}"[:100]
            if live:
                sys.stderr.write(f"\r\x1b[K{line}")
            elif (tenth := (progress.done + 1) * 10 // max(1, progress.total)) > shown[0]:
                shown[0] = tenth
                sys.stderr.write(f"{line}\n")
        elif progress.phase == "embedding":
            if live:
                sys.stderr.write(f"\r\x1b[Kembedding ({progress.done} chunks so far)")
            elif progress.done // 1000 > shown[1]:
                shown[1] = progress.done // 1000
                sys.stderr.write(f"embedding ({progress.done} chunks so far)\n")
        sys.stderr.flush()

    return show


def cmd_remove(args: argparse.Namespace, ctx: CliContext) -> int:
    open_index(ctx).remove_collection(args.name)
    ctx.print(f"Removed the collection {args.name!r} and its index; your files are untouched.")
    return 0


def hit_dict(hit: Hit) -> dict[str, Any]:
    return {
        "rank": hit.rank,
        "file": hit.path,
        "page": hit.page,
        "line_start": hit.line_start,
        "line_end": hit.line_end,
        "heading": hit.heading,
        "text": hit.text,
        "bm25": hit.bm25,
        "bm25_rank": hit.bm25_rank,
        "vector": hit.vector,
        "vector_rank": hit.vector_rank,
        "score": hit.score,
    }


def cmd_search(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.documents.retrieval import Source, search

    if args.k < 1:
        raise DocumentsError("-k must be at least 1")
    index = open_index(ctx)
    index.collection_id(args.name)
    embedder = open_embedder(ctx, args)
    try:
        result = search(index, args.query, [args.name], k=args.k, embedder=embedder)
    finally:
        if embedder is not None:
            embedder.close()
    if args.json:
        ctx.print_json({"mode": result.mode, "note": result.note, "hits": [hit_dict(h) for h in result.hits]})
        return 0
    if result.note:
        warn(f"note: {result.note}")
    if not result.hits:
        ctx.print(f"Nothing in {args.name!r} matches {args.query!r}.")
    for hit in result.hits:
        source = Source.from_hit(hit.rank, hit)
        scores = [f"bm25 {hit.bm25:.2f} (#{hit.bm25_rank})" if hit.bm25 is not None else "bm25 -"]
        if result.mode != "bm25":
            scores.append(f"vector {hit.vector:.3f} (#{hit.vector_rank})" if hit.vector is not None else "vector -")
        ctx.print(f"{source.label()}  [{', '.join(scores)}]")
        ctx.print(f"    {hit.path}")
        for line in hit.text.strip().splitlines()[:8]:
            ctx.print(f"    | {line[:200]}")
        ctx.print()
    return 0


def cmd_model(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.clear:
        ctx.settings.set("embedding_model", "")
        ctx.print("No embedding model: document search uses keywords (BM25) only.")
        return 0
    if args.path is None:
        current = ctx.settings.get("embedding_model")
        ctx.print(current or "No embedding model set: document search uses keywords (BM25) only.")
        return 0
    from app.core.embedder import Embedder

    path = args.path.expanduser().resolve()
    with Embedder.open(path) as embedder:  # refuses a chat model or a broken file before it is saved
        summary = f"{embedder.dimensions} dimensions, {embedder.pooling} pooling"
    ctx.settings.set("embedding_model", str(path))
    ctx.print(f"Embedding model: {path.name} ({summary}). Index your collections again to use it.")
    return 0
