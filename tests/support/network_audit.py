"""Run Hearth commands in this process while an audit hook records every DNS lookup and socket connect.

    python -m tests.support.network_audit OUT.json '[["search", "tiny"], ["files", "owner/repo"]]'

The hook is installed before Hearth (or huggingface_hub) is imported, so nothing escapes it; it is real
CPython auditing (`sys.addaudithook`), not a mock. Hooks cannot be removed, hence a separate process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

events: list[list[Any]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple):  # AF_INET/AF_INET6, not local sockets
        events.append(["connect", str(args[1][0]), args[1][1]])
    elif event == "socket.getaddrinfo":
        events.append(["lookup", str(args[0]), args[1]])


def main() -> None:
    out_path, commands = sys.argv[1], json.loads(sys.argv[2])
    sys.addaudithook(_hook)
    from app.main import main as hearth

    codes = [hearth(list(command)) for command in commands]
    with open(out_path, "w", encoding="utf-8") as out:
        json.dump({"codes": codes, "events": events}, out)


if __name__ == "__main__":
    main()
