"""Great Expectations suites: built from the contract, stored as JSON, run on batches.

The suites in ``expectations/`` are the row and batch rules of the pipeline. They
are generated from :mod:`transforms.schemas` (``reputation expectations --write``)
and a test keeps the committed JSON equal to what the contract implies, so the
rules cannot drift from the contract. Every expectation carries
``meta.reason_code``: the code a failing row is quarantined with.

Great Expectations is imported inside functions: it takes seconds to import and
logs heavily, which neither the CLI start-up nor the Airflow DAG parser should pay.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from transforms.errors import InputRejected
from transforms.schemas import SOURCES, Source

#: Columns added to a batch before validation (lineage and helpers, not data).
ROW_ID = "_row_id"
DELIVERY_END = "_delivery_end"
DELIVERY_DAY = "_dt"


def expectations_dir() -> Path:
    """Folder of the committed suites (``expectations/`` beside the package)."""
    env = os.environ.get("REPUTATION_EXPECTATIONS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "expectations"


def _exp(type_: str, reason: str, rule: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": type_, "kwargs": kwargs, "meta": {"reason_code": reason, "rule": rule}}


def suite_for_source(source: Source) -> dict[str, Any]:
    """The suite (as a JSON-able dict) implied by a source's contract."""
    exps: list[dict[str, Any]] = []
    for c in source.columns:
        if c.required:
            exps.append(_exp("expect_column_values_to_not_be_null", f"missing_value:{c.name}",
                             f"{c.name} is required", column=c.name))
        if c.domain is not None:
            exps.append(_exp("expect_column_values_to_be_in_set", f"out_of_domain:{c.name}",
                             f"{c.name} must be one of {', '.join(c.domain)}", column=c.name,
                             value_set=list(c.domain)))
        if c.min_value is not None or c.max_value is not None:
            bounds = {k: v for k, v in (("min_value", c.min_value), ("max_value", c.max_value)) if v is not None}
            exps.append(_exp("expect_column_values_to_be_between", f"out_of_range:{c.name}",
                             f"{c.name} must be within {c.min_value}..{c.max_value}", column=c.name, **bounds))
        if c.pattern is not None:
            code = "invalid_identifier" if c.name.endswith("_id") else "invalid_format"
            exps.append(_exp("expect_column_values_to_match_regex", f"{code}:{c.name}",
                             f"{c.name} must match {c.pattern}", column=c.name, regex=c.pattern))
        if c.max_chars is not None:
            exps.append(_exp("expect_column_value_lengths_to_be_between", f"text_too_long:{c.name}",
                             f"{c.name} may hold at most {c.max_chars} characters", column=c.name,
                             min_value=0, max_value=c.max_chars))
    for small, large in source.bounded_pairs:
        exps.append(_exp("expect_column_pair_values_a_to_be_greater_than_b", f"cross_field:{small}>{large}",
                         f"{small} must not exceed {large}", column_A=large, column_B=small,
                         or_equal=True, ignore_row_if="either_value_is_missing"))
    for later, earlier in source.ordered_pairs:
        exps.append(_exp("expect_column_pair_values_a_to_be_greater_than_b", f"cross_field:{later}<{earlier}",
                         f"{later} must not be before {earlier}", column_A=later, column_B=earlier,
                         or_equal=True, ignore_row_if="either_value_is_missing"))
    if source.event_column and SOURCES[source.name].column(source.event_column).kind == "timestamp":
        exps.append(_exp("expect_column_pair_values_a_to_be_greater_than_b", f"after_delivery:{source.event_column}",
                         f"{source.event_column} must not be after the delivery day", column_A=DELIVERY_END,
                         column_B=source.event_column, or_equal=False, ignore_row_if="either_value_is_missing"))
    if source.name == "merchants":
        exps.append(_exp("expect_column_pair_values_a_to_be_greater_than_b", "future_date:registered_on",
                         "registered_on must not be after the delivery day", column_A=DELIVERY_DAY,
                         column_B="registered_on", or_equal=True, ignore_row_if="either_value_is_missing"))
    if source.name == "sales":
        exps.append(_exp("expect_column_pair_values_a_to_be_greater_than_b", "future_date:date",
                         "a sales day must not be after the delivery day", column_A=DELIVERY_DAY,
                         column_B="date", or_equal=True, ignore_row_if="either_value_is_missing"))
    return {"name": f"{source.name}_suite", "meta": {"source": source.name, "generated_from": "transforms.schemas"},
            "expectations": exps}


def write_suites(folder: Path | None = None) -> list[Path]:
    """Write every source suite as JSON into ``folder`` (default ``expectations/``)."""
    out = folder or expectations_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in SOURCES.values():
        p = out / f"{source.name}.json"
        p.write_text(json.dumps(suite_for_source(source), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


def load_suite(name: str) -> dict[str, Any]:
    """Load a committed suite by file stem (``reviews``, ``scores`` ...)."""
    p = expectations_dir() / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        from transforms.errors import ConfigError

        raise ConfigError(f"expectation suite {p} is missing",
                          hint="run `reputation expectations --write` or restore it from git") from None
    return data


@dataclass
class SuiteResult:
    """What a suite found: failing row ids per reason code, and batch-level failures."""

    suite: str
    success: bool
    row_failures: dict[str, list[int]] = field(default_factory=dict)
    batch_failures: list[str] = field(default_factory=list)
    evaluated: int = 0
    docs_index: str | None = None


def _quiet_gx() -> Any:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    # GX fingerprints every in-memory batch under 1 GB by hashing all its cells (a batch marker
    # only; nothing reads it): ~45 % of the suite time on 5 M reviews. Switch it off.
    import great_expectations.execution_engine.pandas_execution_engine as pee

    pee.HASH_THRESHOLD = 0
    return gx


def preload() -> None:
    """Import Great Expectations now, so that the first suite does not wait for it.

    The import takes 3-4 s (pandas, scipy, the GX modules). :func:`transforms.pipeline.run_date`
    calls this in a thread while ingest runs; validate then finds the modules loaded.
    """
    _quiet_gx()


#: Data Docs site name used for a run's docs folder.
DOCS_SITE = "run_docs"


def store_dir_for(docs_dir: Path) -> Path:
    """Where the suites and validation results behind a docs folder are kept (JSON, beside it)."""
    return docs_dir.parent / "gx_store"


def _context(gx: Any, docs_dir: Path | None) -> Any:
    """An ephemeral context; with ``docs_dir``, its suites and results persist beside the docs.

    Every suite of a run (five sources in ``validate``, scores in ``publish``, possibly in
    different processes) writes into one store, so the Data Docs built from it show all of
    them. With the in-memory default each context's site build removed the pages of the
    suites it did not hold, leaving only the last suite in the published docs. No temporary
    docs site is configured, so nothing is left behind in the temp folder.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    stores = dict(defaults.stores)
    sites: dict[str, Any] = {}
    if docs_dir is not None:
        store = store_dir_for(docs_dir)
        for name, cls, sub in ((defaults.expectations_store_name, "ExpectationsStore", "expectations"),
                               (defaults.validation_results_store_name, "ValidationResultsStore", "validations")):
            stores[name] = {"class_name": cls, "store_backend": {
                "class_name": "TupleFilesystemStoreBackend", "base_directory": str(store / sub)}}
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    cfg = DataContextConfig(store_backend_defaults=defaults, stores=stores, data_docs_sites=sites,
                            analytics_enabled=False,
                            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
    return gx.get_context(mode="ephemeral", project_config=cfg)


def build_data_docs(docs_dir: Path) -> str | None:
    """(Re)build the Data Docs of every suite and result stored for ``docs_dir``; return index.html."""
    gx = _quiet_gx()
    docs_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(gx, docs_dir)
    ctx.build_data_docs(site_names=[DOCS_SITE])
    index = docs_dir / "index.html"
    return str(index) if index.exists() else None


def run_suite(frame: pl.DataFrame, suite: dict[str, Any], *, docs_dir: Path | None = None,
              batch_name: str = "batch", build_docs: bool = True) -> SuiteResult:
    """Validate a frame with a suite and map failing rows back to reason codes.

    Parameters
    ----------
    frame
        The batch; must contain ``_row_id`` (unique int) for row-level results.
    suite
        A suite dict as stored in ``expectations/``.
    docs_dir
        When given, the suite and its validation result are kept in :func:`store_dir_for`
        ``(docs_dir)`` and Great Expectations Data Docs are built into this folder.
    build_docs
        With ``docs_dir``, update the Data Docs now (incrementally). ``False`` only stores
        the result, for a caller that validates several batches and then calls
        :func:`build_data_docs` once.

    Raises
    ------
    InputRejected
        When an expectation cannot be evaluated at all (for example a column of a
        type the rule cannot compare); the message names the suite, the rule and
        the column.
    """
    return SuiteRunner(suite, docs_dir=docs_dir, batch_name=batch_name, build_docs=build_docs).run(frame)


class SuiteRunner:
    """One suite, set up once (context, suite, checkpoint), run on any number of batches.

    The full recompute validates a source one batch of delivery days at a time (so its
    memory does not grow with the history); the Great Expectations context and checkpoint
    are built once per source, not once per batch. Each :meth:`run` stores its own
    validation result (with ``docs_dir``), so the Data Docs show one result per batch.
    """

    def __init__(self, suite: dict[str, Any], *, docs_dir: Path | None = None, batch_name: str = "batch",
                 build_docs: bool = True) -> None:
        gx = _quiet_gx()
        import great_expectations.expectations as gxe  # noqa: F401  (registers expectation classes)
        from great_expectations.core.expectation_suite import ExpectationSuite

        if docs_dir is not None:
            docs_dir.mkdir(parents=True, exist_ok=True)
        self.suite = suite
        self.docs_dir = docs_dir
        # Only the columns the rules read (and the row id) are copied to pandas, unless a rule is
        # about the whole table (its columns, its row count), which must see every column.
        named = [[e["kwargs"][k] for k in ("column", "column_A", "column_B") if k in e["kwargs"]]
                 for e in suite["expectations"]]
        self.columns: list[str] | None = (None if not all(named)
                                          else [ROW_ID, *dict.fromkeys(c for cs in named for c in cs)])
        ctx = _context(gx, docs_dir)
        gx_suite = ctx.suites.add_or_update(ExpectationSuite(name=suite["name"],
                                                             expectations=suite["expectations"],
                                                             meta=suite.get("meta", {})))
        asset = ctx.data_sources.add_pandas("pipeline").add_dataframe_asset(batch_name)
        bd = asset.add_batch_definition_whole_dataframe("whole")
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{suite['name']}_vd", data=bd,
                                                                    suite=gx_suite))
        actions = ([gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[DOCS_SITE])]
                   if docs_dir is not None and build_docs else [])
        # COMPLETE lists every failing row (uncapped). The row id reaches it as the frame's
        # (unnamed) pandas index, not through ``unexpected_index_column_names``: with the latter,
        # Great Expectations builds a dict per failing row with one ``DataFrame.at`` lookup per
        # column, and stores each failing value twice (once per row dict, once in
        # ``unexpected_list``). On 1 M-row batches that was ~15 % (reviews) to ~40 % (sales) of
        # the run's CPU; the failing row ids are the same.
        self._cp = ctx.checkpoints.add(gx.Checkpoint(
            name=f"{suite['name']}_cp", validation_definitions=[vd], actions=actions,
            result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False}))

    def run(self, frame: pl.DataFrame) -> SuiteResult:
        """Validate one batch (see :func:`run_suite`)."""
        suite = self.suite
        if self.columns is not None:
            frame = frame.select([c for c in self.columns if c in frame.columns])
        # All timestamps are UTC by now; hand them to pandas naive so Great Expectations
        # compares plain datetime64 values (tz-aware Series hit pandas deprecation paths).
        naive = [pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
                 for c, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone]
        pdf = (frame.with_columns(naive) if naive else frame).to_pandas()
        has_row_id = ROW_ID in pdf.columns
        if has_row_id:
            # The row id stays a column too, so rules about the whole table see the same columns.
            pdf.index = pdf[ROW_ID].to_numpy()
        res = self._cp.run(batch_parameters={"dataframe": pdf})
        del pdf
        out = SuiteResult(suite=suite["name"], success=bool(res.success), evaluated=frame.height)
        for vr in res.run_results.values():
            for r in vr.results:
                cfg = r.expectation_config
                meta = cfg.meta or {}
                code = meta.get("reason_code", cfg.type)
                raised = _raised(r.exception_info)
                idx = None if r.success else (r.result or {}).get("unexpected_index_list")
                if not raised and idx and not has_row_id:
                    raise InputRejected(f"suite {suite['name']}: rule {cfg.type} failed rows of a batch without "
                                        f"{ROW_ID}, so they cannot be named",
                                        hint=f"give every batch a unique integer {ROW_ID} column")
                if raised:
                    col = cfg.kwargs.get("column") or f"{cfg.kwargs.get('column_A')}/{cfg.kwargs.get('column_B')}"
                    raise InputRejected(
                        f"suite {suite['name']}: rule {cfg.type} on {col} could not run ({raised})",
                        hint="the column's values are of a type the rule cannot compare; check the source's types")
                if r.success:
                    continue
                if idx is None:
                    out.batch_failures.append(code)
                    continue
                out.row_failures[code] = sorted({int(i) for i in idx})
        if self.docs_dir is not None:
            index = self.docs_dir / "index.html"
            out.docs_index = str(index) if index.exists() else None
        return out


def _raised(info: Any) -> str | None:
    """The message of an exception raised while evaluating a rule, if any.

    Great Expectations 1.24 nests metric exceptions by metric id, with no
    top-level ``raised_exception``; look at both levels.
    """
    if not info:
        return None
    if isinstance(info, dict):
        if info.get("raised_exception"):
            return str(info.get("exception_message") or "exception")
        for v in info.values():
            msg = _raised(v) if isinstance(v, dict) else None
            if msg:
                return msg
        return None
    if getattr(info, "raised_exception", False):
        return str(getattr(info, "exception_message", "exception"))
    return None
