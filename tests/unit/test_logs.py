"""Structured logs carry the run id and score date; JSON lines parse."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from transforms.logs import configure, stage_log


def test_json_log_lines_carry_run_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json", "INFO")
    try:
        stage_log("score", SimpleNamespace(run_id="r123", score_date="2026-03-01"), seconds=1.5)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        data = json.loads(line)
        assert (data["run_id"], data["score_date"], data["stage"], data["seconds"]) == ("r123", "2026-03-01",
                                                                                        "score", 1.5)
        assert data["level"] == "INFO"
    finally:
        configure("text", "WARNING")
        logging.getLogger("reputation").propagate = True


def test_text_log_lines_append_key_values(capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "INFO")
    try:
        stage_log("ingest", SimpleNamespace(run_id="r9", score_date="2026-03-02"))
        assert "run_id=r9 score_date=2026-03-02 stage=ingest" in capsys.readouterr().err
    finally:
        configure("text", "WARNING")
        logging.getLogger("reputation").propagate = True
