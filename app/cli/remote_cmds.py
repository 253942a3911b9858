"""`hearth servers`: add, list, remove and test the OpenAI-compatible servers Hearth can chat through."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from app.cli.context import CliContext
from app.core.errors import ConfigError
from app.core.remote_servers import ServerConfig, ServerRegistry


def register(subparsers: argparse._SubParsersAction) -> None:
    servers = subparsers.add_parser(
        "servers", help="the OpenAI-compatible servers Hearth can chat through (llama-server, vLLM, Ollama …)"
    )
    servers.set_defaults(handler=cmd_list, json=False)
    actions = servers.add_subparsers(dest="servers_action", metavar="ACTION")

    add = actions.add_parser("add", help="add a server: a name and its base URL (http(s)://host:port/v1)")
    add.add_argument("name")
    add.add_argument("url", help="the base URL, e.g. http://127.0.0.1:8080/v1")
    add.add_argument("--api-key-stdin", action="store_true", help="read an API key from standard input (one line)")
    add.add_argument(
        "--allow-plain-http-key",
        action="store_true",
        help="allow the key to travel unencrypted to a plain-http server on another machine",
    )
    add.add_argument(
        "--openai-fields-only",
        action="store_true",
        help="send only OpenAI's sampling fields (for servers that refuse top_k, min_p, repeat_penalty)",
    )
    add.add_argument("--replace", action="store_true", help="replace a server of that name")
    add.set_defaults(handler=cmd_add)

    listing = actions.add_parser("list", help="list the servers")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=cmd_list)

    remove = actions.add_parser("remove", help="forget a server and its API key")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_remove)

    test = actions.add_parser("test", help="connect to a server and list its models")
    test.add_argument("name")
    test.set_defaults(handler=cmd_test)


def _read_key() -> str:
    if sys.stdin.isatty():
        print("API key (then Enter): ", end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise ConfigError("--api-key-stdin: no key on standard input")
    return line.strip()


def cmd_add(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core import remote_keys

    registry = ServerRegistry(ctx.settings)
    key = remote_keys.check_key(_read_key()) if args.api_key_stdin else None
    config = ServerConfig(
        args.name,
        args.url,
        has_key=key is not None,
        key_over_http=args.allow_plain_http_key,
        llama_fields=not args.openai_fields_only,
    ).validate()
    existing = registry.find(config.name)
    if existing is not None and not args.replace:
        raise ConfigError(f"a server named {existing.name!r} already exists; pass --replace to change it")
    if key is not None and config.key_problem:
        raise ConfigError(f"{config.key_problem} (--allow-plain-http-key)")
    if key is not None:
        remote_keys.save_key(config.name, key)
    try:
        registry.put(config, replacing=existing.name if existing else None)
    except ConfigError:
        if key is not None:
            remote_keys.clear_key(config.name)
        raise
    if existing is not None and existing.has_key and key is None:
        remote_keys.clear_key(existing.name)
    ctx.print(
        f"{'Changed' if existing else 'Added'} server {config.name}: {config.url}"
        + (" (API key in the keyring)" if key else "")
    )
    ctx.print(f"Check it with: hearth servers test {_quoted(config.name)}")
    return 0


def cmd_list(args: argparse.Namespace, ctx: CliContext) -> int:
    registry = ServerRegistry(ctx.settings)
    servers = registry.all()
    broken = registry.broken()
    if args.json:
        ctx.print_json([asdict(config) for config in servers])
        return 0
    if not servers and not broken:
        ctx.print("No servers yet. Add one with: hearth servers add NAME http://HOST:PORT/v1")
        return 0
    width = max([4, *(len(c.name) for c in servers)])
    ctx.print(f"{'NAME':<{width}}  {'KEY':<8}  URL")
    for config in servers:
        key = "keyring" if config.has_key else "none"
        ctx.print(f"{config.name:<{width}}  {key:<8}  {config.url}")
    for name, problem in broken:
        ctx.print(f"{name:<{width}}  BROKEN    {problem}")
    return 0


def cmd_remove(args: argparse.Namespace, ctx: CliContext) -> int:
    registry = ServerRegistry(ctx.settings)
    config = registry.find(args.name)
    removed = registry.remove(args.name)
    if config is not None and config.has_key:
        from app.core.remote_keys import clear_key

        clear_key(removed)
    ctx.print(f"Removed server {removed}")
    return 0


def cmd_test(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.core.remote_catalog import RemoteCatalog

    config = ServerRegistry(ctx.settings).get(args.name)
    check = RemoteCatalog().check(config)
    ctx.print(check.message)
    return 0


def _quoted(name: str) -> str:
    return f"'{name}'" if " " in name else name
