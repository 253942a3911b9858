"""Logging setup: one rotating file in the logs folder, loggers per area (hearth.engine, hearth.hub ...)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"
_configured: set[Path] = set()


def setup_logging(logs_dir: Path, level: int = logging.INFO) -> Path:
    """Send every `hearth.*` record to logs_dir/hearth.log (5 x 2 MiB, rotated); idempotent per folder."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = logs_dir / "hearth.log"
    root = logging.getLogger("hearth")
    root.setLevel(level)
    if log_file not in _configured:
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=2 * 1024 * 1024, backupCount=5, encoding="utf-8", delay=True
        )
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        _configured.add(log_file)
    return log_file
