"""Structured logging: every pipeline log line carries the run id and score date.

``REPUTATION_LOG_FORMAT=json`` emits one JSON object per line (for log shippers);
the default is readable text. Personal identifiers are never logged: the pipeline
only logs counts, paths and codes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

_FIELDS = ("run_id", "score_date", "stage", "source", "rows", "seconds", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per record with the pipeline's context fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                                "logger": record.name, "msg": record.getMessage()}
        for key in _FIELDS:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines with the context fields appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in _FIELDS if hasattr(record, k))
        return f"{base} {extra}".rstrip()


def configure(fmt: str = "text", level: str = "WARNING") -> None:
    """Install the project's handler on the ``reputation`` logger (idempotent)."""
    logger = logging.getLogger("reputation")
    logger.setLevel(getattr(logging, level.upper(), logging.WARNING))
    for h in list(logger.handlers):
        if getattr(h, "_reputation", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler._reputation = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def stage_log(stage: str, ctx: Any, **fields: Any) -> None:
    """Log the end of a pipeline stage with the run's context."""
    logging.getLogger("reputation").info(
        "%s done for %s", stage, ctx.score_date,
        extra={"run_id": ctx.run_id, "score_date": ctx.score_date, "stage": stage, **fields})
