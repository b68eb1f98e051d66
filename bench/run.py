"""Performance benchmark of the nightly pipeline (issue 7 and issue 3.10).

    .venv/bin/python bench/run.py --sizes S M [L] --out docs/benchmarks.md [--workdir /tmp/bench]

For each size it generates a marketplace (or reuses one generated with the same
parameters), then measures, each in its own process so that peak RSS is per
measurement (``os.wait4``):

1. full recompute of the last day on an empty lake (``pipeline.run_date``, the
   function ``reputation run`` calls), with the per-stage seconds of the run;
2. the nightly incremental run: a lake where LAST-1 is published (built by a full
   run of LAST-1), then LAST with one new day landed;
3. the DuckDB reference (``bench/duckdb_reference.sql``) over the raw landing files
   and over the staged Parquet;
4. the floor: reading the needed columns of the landing files (and of the staged
   Parquet) once with Polars;
5. issue 3.10: ingest + validate of one delivery day of 5 M review rows, beside a
   bare Polars read of the same file.

Results are kept as JSON in ``<workdir>/results/`` and rendered into the Markdown
report with an SVG chart (``docs/benchmarks-time-vs-size.svg``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from child import SOURCES, staged_window_files  # noqa: E402

PY = sys.executable
CHILD = str(HERE / "child.py")
SIZES: dict[str, tuple[int, int]] = {"S": (2_000, 120), "M": (20_000, 180), "L": (100_000, 180)}
ISSUE_310_ROWS = 5_000_000
ISSUE_310_DAY = "2026-01-01"
MIB = 1024 * 1024
GIB = 1024 * MIB

#: Columns compared between the DuckDB reference and the published scores.
COMPARED = ["orders_count", "late_shipment_count", "cancellation_count", "return_count", "defect_return_count",
            "nad_return_count", "complaint_count", "quality_complaint_count", "nad_complaint_count",
            "after_sales_failure_count", "review_count", "verified_review_count", "low_rating_count",
            "mismatch_review_count"]


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------ measurement
def measure(step: str, args: list[str], workdir: Path, label: str, *, profile: Path | None = None,
            env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one child step in its own process; wall, CPU and peak RSS of that process."""
    out = workdir / "measurements" / f"{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    logf = workdir / "measurements" / f"{label}.log"
    cmd = [PY]
    if profile is not None:
        cmd += ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile)]
    cmd += [CHILD, step, "--out", str(out), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    if CODE_ROOT:
        env["BENCH_CODE_ROOT"] = CODE_ROOT
        env["PYTHONPATH"] = CODE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    load0 = os.getloadavg()[0]
    samples: list[tuple[float, float]] = []
    with logf.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(proc.pid, t0, samples, stop), daemon=True)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # The pipeline stages sources in worker processes: the kernel's maxrss is the largest single
    # process, so the peak is the larger of it and the sampled sum over the whole process tree.
    tree_peak = max((m for _, m in samples), default=0.0)
    res: dict[str, Any] = {
        "label": label, "wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
        "peak_mib": round(max(ru.ru_maxrss / 1024, tree_peak), 1),
        "largest_process_mib": round(ru.ru_maxrss / 1024, 1), "rc": proc.returncode,
        "load_before": round(load0, 2), "profiled": profile is not None,
    }
    if proc.returncode != 0 or not out.exists():
        tail = logf.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{label}: step {step} failed (rc={proc.returncode}); log {logf}:\n{tail}")
    res["inner"] = json.loads(out.read_text())
    res["rss_timeline"] = samples[:: max(1, len(samples) // 400)]
    if step == "run":
        res["stage_peaks_mib"] = stage_peaks(samples, res["inner"])
    log(f"  {label}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, {res['peak_mib']:.0f} MiB peak")
    return res


def _sample_rss(pid: int, t0: float, out: list[tuple[float, float]], stop: threading.Event) -> None:
    """Resident set size of ``pid`` and all its descendants every 0.2 s (MiB), to attribute the peak to a stage."""
    while not stop.is_set():
        total = _tree_rss_kib(pid)
        if total:
            out.append((round(time.perf_counter() - t0, 2), round(total / 1024, 1)))
        stop.wait(0.2)


def _tree_rss_kib(pid: int) -> int:
    """VmRSS (KiB) summed over ``pid`` and its descendants (``/proc/<pid>/task/*/children``)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def stage_peaks(samples: list[tuple[float, float]], inner: dict[str, Any]) -> dict[str, float]:
    """Highest sampled RSS inside each stage, placing the stages back to back after the imports.

    ``score_shards`` is the sum of the shards' own times and publish's parts are inside
    ``publish``, so the stages are ingest, validate, score (prepare + shards + gather), publish.
    """
    t = inner.get("timings") or {}
    score = sum(v for k, v in t.items() if k.startswith("score"))
    bounds: list[tuple[str, float]] = [("start", float(inner.get("import_seconds", 0.0)))]
    for name, dur in (("ingest", t.get("ingest", 0.0)), ("validate", t.get("validate", 0.0)), ("score", score),
                      ("publish", t.get("publish", 0.0))):
        bounds.append((name, bounds[-1][1] + dur))
    peaks: dict[str, float] = {}
    lo = 0.0
    for name, hi in bounds:
        inside = [m for ts, m in samples if lo <= ts < hi]
        peaks[name] = max(inside) if inside else 0.0
        lo = hi
    return peaks


# ----------------------------------------------------------------------- lakes
def hardlink_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` into ``dst`` with hard links (real files, no data copied).

    The lake refuses symbolic links anywhere in ``landing/`` (a link is reported as a bad
    path and never followed), so a fresh lake gets hard links of the generated files.
    """
    for dirpath, _, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            os.link(Path(dirpath) / f, dst / rel / f)


def fresh_lake(root: Path, landing: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    hardlink_tree(landing, root / "landing")
    return root


def copy_lake(src: Path, dst: Path) -> None:
    """Copy a lake (relative partition links kept), hard-linking its landing zone."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: ["landing"] if Path(d) == src else [])
    hardlink_tree(src / "landing", dst / "landing")


def warm_landing(landing: Path) -> dict[str, Any]:
    """Read every landing file once, so the next measurement finds them in the page cache.

    The pipeline's full recompute was measured first and could read the landing zone from disk,
    while DuckDB and the floor, measured after it, read it from memory. Every measurement that
    reads the landing zone now starts from the same (warm) cache; the time of this read is kept.
    """
    t0 = time.perf_counter()
    size = 0
    for f in sorted(landing.rglob("*")):
        if f.is_file():
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    size += len(chunk)
    return {"bytes": size, "seconds": round(time.perf_counter() - t0, 3)}


#: Nightly runs per size (each on a fresh copy of the LAST-1 lake); the report and the verdict use
#: their median, so one run slowed by the shared machine does not decide the target.
NIGHTLY_RUNS = 3


#: Where the measured code lives (a snapshot of transforms/ and expectations/; see snapshot_code).
CODE_ROOT = ""


def code_fingerprint(root: Path | None = None) -> str:
    """Hash of everything a run's output depends on (code, policy, suites)."""
    base = root or Path(CODE_ROOT or REPO)
    h = hashlib.sha256()
    for pattern in ("transforms/**/*.py", "transforms/policies/*.yaml", "expectations/*.json"):
        for p in sorted(base.glob(pattern)):
            h.update(p.relative_to(base).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def snapshot_code(workdir: Path, attempts: int = 20, *, src: Path | None = None,
                  label: str | None = None) -> dict[str, Any]:
    """Copy transforms/ and expectations/ aside and measure that copy for the whole run.

    Other engineers edit the working tree while the benchmark runs (hours at L); a half-applied
    change (say a policy key ahead of its model) must not fail or skew a measurement. The copy
    is used only when it imports and loads its policy; otherwise wait and copy again. ``src``
    (``--code-from``) takes the copy from another tree instead of the working tree, described
    by ``label`` in the report.
    """
    global CODE_ROOT  # noqa: PLW0603
    src = src or REPO
    for i in range(attempts):
        fp = code_fingerprint(src)
        dst = workdir / "code" / fp
        if not (dst / "transforms").is_dir():
            tmp = workdir / "code" / f".{fp}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src / "transforms", tmp / "transforms",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            shutil.copytree(src / "expectations", tmp / "expectations")
            shutil.rmtree(dst, ignore_errors=True)
            tmp.rename(dst)
        check = subprocess.run(
            [PY, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import transforms.pipeline, transforms.cli; "
             "from transforms.policy import load_policy; load_policy(None); "
             "import transforms; assert transforms.__file__.startswith(sys.argv[1]), transforms.__file__",
             str(dst)], check=False, capture_output=True, text=True, cwd="/")
        if check.returncode == 0:
            CODE_ROOT = str(dst)
            sys.path.insert(0, CODE_ROOT)
            git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False,
                                 capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "transforms", "expectations"],
                                   check=False, capture_output=True, text=True).stdout.strip()
            log(f"measuring the code snapshot {dst} (git {git}{', with uncommitted changes' if dirty else ''})")
            out = {"path": CODE_ROOT, "fingerprint": fp, "git_head": git, "uncommitted_changes": bool(dirty)}
            return out | ({"label": label, "from": str(src)} if src != REPO or label else {})
        log(f"code snapshot {fp} does not load (attempt {i + 1}): "
            f"{(check.stderr.strip().splitlines() or ['?'])[-1][:200]}; retrying in 30 s")
        time.sleep(30)
    raise RuntimeError("the working tree never loaded cleanly; cannot take a code snapshot")


def landing_stats(landing: Path) -> dict[str, Any]:
    files = [p for p in landing.rglob("*") if p.is_file()]
    by_source: dict[str, int] = {}
    for p in files:
        by_source[p.relative_to(landing).parts[0]] = by_source.get(p.relative_to(landing).parts[0], 0) + \
            p.stat().st_size
    return {"files": len(files), "bytes": sum(by_source.values()), "bytes_by_source": by_source}


# ------------------------------------------------------------------ generation
def ensure_generated(workdir: Path, size: str, seed: int) -> tuple[Path, dict[str, Any]]:
    merchants, days = SIZES[size]
    gen = workdir / f"gen-m{merchants}-d{days}-s{seed}"
    marker = gen / "bench_generation.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("params") == {"merchants": merchants, "days": days, "seed": seed}:
            log(f"{size}: reusing {gen} (generated in {info['wall_s']:.1f} s)")
            return gen, info | {"reused": True}
    if gen.exists():
        shutil.rmtree(gen)
    log(f"{size}: generating {merchants} merchants x {days} days into {gen}")
    m = measure("generate", ["--root", str(gen), "--merchants", str(merchants), "--days", str(days),
                             "--seed", str(seed)], workdir, f"{size}-generate")
    info = {"params": {"merchants": merchants, "days": days, "seed": seed}, "wall_s": m["wall_s"],
            "cpu_s": m["cpu_s"], "peak_mib": m["peak_mib"], **m["inner"]}
    marker.write_text(json.dumps(info, indent=2))
    return gen, info | {"reused": False}


# ------------------------------------------------------------------- DuckDB vars
def _utf8(path: Path) -> bool:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        line = fh.readline()
    return line.decode("utf-8", "replace").lstrip("\ufeff").strip().split(",")


def duckdb_common_vars(day: date) -> dict[str, Any]:
    from transforms.policy import load_policy
    from transforms.scoring import mismatch_pattern

    p = load_policy(None)
    return {
        "score_date": day.isoformat(),
        "as_of_end": f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00",
        "short_days": p.window.days, "extended_days": p.window.extended_days,
        "volume_threshold": p.window.volume_threshold_orders,
        "response_deadline_hours": int(p.after_sales.response_deadline_hours),
        "resolution_deadline_days": int(p.after_sales.resolution_deadline_days),
        "return_deadline_days": int(p.after_sales.return_resolution_deadline_days),
        "mismatch_max_rating": p.description.mismatch_max_rating,
        "mismatch_pattern": mismatch_pattern(p.description.mismatch_lexicon),
    }


def duckdb_landing_vars(gen: Path, day: date) -> tuple[dict[str, Any], dict[str, Any]]:
    """File lists per source and format; GB18030 CSV files are excluded (DuckDB cannot decode them)."""
    from transforms.schemas import SOURCES as CONTRACT

    cache = gen / "bench_duckdb_files.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        return cached["vars"] | duckdb_common_vars(day), cached["excluded"]
    variables: dict[str, Any] = {}
    excluded: dict[str, Any] = {"files": [], "rows_estimate": 0}
    for source in SOURCES:
        lists: dict[str, list[str]] = {"csv": [], "jsonl": [], "parquet": []}
        for f in sorted((gen / "landing" / source).glob("dt=*/*")):
            if f.name.endswith((".csv", ".csv.gz")):
                header = _csv_header(f)
                if header != list(CONTRACT[source].names):
                    raise RuntimeError(f"{f}: header {header} is not the contract's column order; "
                                       "bench/duckdb_reference.sql reads CSV without sniffing")
                if not _utf8(f):
                    excluded["files"].append(str(f.relative_to(gen)))
                    continue
                lists["csv"].append(str(f))
            elif f.name.endswith((".jsonl", ".jsonl.gz")):
                lists["jsonl"].append(str(f))
            elif f.name.endswith(".parquet"):
                lists["parquet"].append(str(f))
        for fmt, files in lists.items():
            if not files:
                raise RuntimeError(f"no {fmt} files for {source}: the SQL expects every format")
            variables[f"{source}_{fmt}"] = files
    truth = gen / "truth" / "files.parquet"
    if truth.exists() and excluded["files"]:
        import polars as pl

        t = pl.read_parquet(truth)
        excluded["rows_estimate"] = int(t.filter(pl.col("file").is_in(excluded["files"]))["rows"].sum())
    cache.write_text(json.dumps({"vars": variables, "excluded": excluded}))
    return variables | duckdb_common_vars(day), excluded


def duckdb_staged_vars(lake: Path, day: date, window_days: int) -> dict[str, Any]:
    files = staged_window_files(lake, day, window_days)
    return {f"{s}_staged": files[s] for s in SOURCES} | duckdb_common_vars(day)


# --------------------------------------------------------------- size measures
def events_in_window(lake: Path, day: date, window_days: int) -> dict[str, int]:
    """Accepted staged events whose event day lies in the extended window ending ``day``."""
    import polars as pl

    lo = day - timedelta(days=window_days - 1)
    files = staged_window_files(lake, day, window_days)
    event = {"sales": pl.col("date"), "reviews": pl.col("created_at").dt.date(),
             "complaints": pl.col("opened_at").dt.date(), "returns": pl.col("requested_at").dt.date()}
    out = {}
    for source, expr in event.items():
        if not files[source]:
            out[source] = 0
            continue
        out[source] = int(pl.scan_parquet(files[source]).filter(expr.is_between(lo, day)).select(pl.len())
                          .collect().item())
    return out


def compare_reference(result: Path, lake: Path, day: date) -> dict[str, Any]:
    """Share of merchants whose evidence counts equal the published scores' counts."""
    import polars as pl

    ref = pl.read_parquet(result)
    scores = pl.read_parquet(sorted((lake / "scores" / f"score_date={day.isoformat()}").glob("*.parquet")))
    joined = scores.select("merchant_id", *COMPARED).join(ref.select("merchant_id", *COMPARED),
                                                          on="merchant_id", how="full", suffix="_ref")
    n = joined.height
    shares = {c: round(joined.select((pl.col(c) == pl.col(f"{c}_ref")).fill_null(False).mean()).item() or 0.0, 6)
              for c in COMPARED}
    all_equal = joined.select(pl.all_horizontal([(pl.col(c) == pl.col(f"{c}_ref")).fill_null(False)
                                                 for c in COMPARED]).mean()).item()
    return {"merchants_scores": scores.height, "merchants_reference": ref.height, "joined": n,
            "share_equal_by_column": shares, "share_all_equal": round(all_equal or 0.0, 6)}


def run_stages(m: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (m["inner"].get("timings") or {}).items()}


def bench_size(size: str, workdir: Path, seed: int, *, profile: bool, duckdb_threads: int | None) -> dict[str, Any]:
    t_size = time.perf_counter()
    from transforms.policy import load_policy

    window_days = load_policy(None).window.extended_days
    gen, gen_info = ensure_generated(workdir, size, seed)
    last = date.fromisoformat(gen_info["end"])
    prev = last - timedelta(days=1)
    base_dir = workdir / size
    base_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"size": size, "merchants": SIZES[size][0], "days": SIZES[size][1], "seed": seed,
                           "last_day": last.isoformat(), "generation": gen_info,
                           "landing": landing_stats(gen / "landing"), "code_fingerprint": code_fingerprint()}

    # 1. full recompute of LAST on an empty lake
    log(f"{size}: full recompute of {last}")
    full_root = fresh_lake(base_dir / "full", gen / "landing")
    res["warm_landing"] = warm_landing(gen / "landing")
    log(f"{size}: landing read once to warm the page cache: {res['warm_landing']['seconds']:.1f} s")
    full = measure("run", ["--root", str(full_root), "--date", last.isoformat()], workdir, f"{size}-full")
    _check_published(full)
    res["full"] = full
    res["events_in_window"] = events_in_window(full_root, last, window_days)
    res["events_total"] = sum(res["events_in_window"].values())
    res["rows_read"] = {s: (full["inner"]["rows"].get(s) or {}).get("read") for s in SOURCES}

    # 2. nightly incremental: LAST-1 published first (a full run, kept and reused while the code is unchanged)
    base = base_dir / f"base-{prev.isoformat()}"
    marker = base / "bench_base.json"
    fp = res["code_fingerprint"]
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fp:
        res["full_prev"] = json.loads(marker.read_text())["measurement"] | {"reused": True}
        log(f"{size}: reusing the published {prev} lake {base}")
    else:
        log(f"{size}: full run of {prev} (the incremental run's starting lake)")
        fresh_lake(base, gen / "landing")
        warm_landing(gen / "landing")
        prof = workdir / "profiles" / f"{size}-full-{prev.isoformat()}.pyisession" if profile else None
        if prof:
            prof.parent.mkdir(parents=True, exist_ok=True)
        res["full_prev"] = measure("run", ["--root", str(base), "--date", prev.isoformat()], workdir,
                                   f"{size}-full-prev", profile=prof)
        _check_published(res["full_prev"])
        marker.write_text(json.dumps({"fingerprint": fp, "measurement": res["full_prev"]}))
        if prof:
            save_profile(workdir, f"{size}: full recompute of LAST-1", render_profile(prof))
    incr_root = base_dir / "incr"
    runs = []
    for k in range(NIGHTLY_RUNS):
        copy_lake(base, incr_root)
        log(f"{size}: incremental run of {last} ({k + 1} of {NIGHTLY_RUNS})")
        runs.append(measure("run", ["--root", str(incr_root), "--date", last.isoformat()], workdir,
                            f"{size}-incremental" + (f"-{k + 1}" if k else "")))
        _check_published(runs[-1])
    res["incremental"] = sorted(runs, key=lambda m: m["wall_s"])[len(runs) // 2]
    res["incremental_walls_s"] = [m["wall_s"] for m in runs]
    res["incremental_peaks_mib"] = [m["peak_mib"] for m in runs]
    if profile:
        copy_lake(base, incr_root)
        prof = workdir / "profiles" / f"{size}-incremental-{last.isoformat()}.pyisession"
        measure("run", ["--root", str(incr_root), "--date", last.isoformat()], workdir,
                f"{size}-incremental-profiled", profile=prof)
        save_profile(workdir, f"{size}: nightly incremental", render_profile(prof))
    shutil.rmtree(incr_root, ignore_errors=True)

    # 3. DuckDB reference
    threads = ["--threads", str(duckdb_threads)] if duckdb_threads else []
    lvars, excluded = duckdb_landing_vars(gen, last)
    vfile = base_dir / "duckdb_landing_vars.json"
    vfile.write_text(json.dumps(lvars))
    log(f"{size}: DuckDB over the landing files ({len(excluded['files'])} GB18030 files excluded)")
    warm_landing(gen / "landing")
    res["duckdb_landing"] = measure("duckdb", ["--variant", "landing", "--vars", str(vfile), *threads], workdir,
                                    f"{size}-duckdb-landing")
    res["duckdb_landing"]["excluded"] = excluded
    res["duckdb_landing"]["agreement"] = compare_reference(
        Path(res["duckdb_landing"]["inner"]["result"]), full_root, last)
    svars = duckdb_staged_vars(full_root, last, window_days)
    vfile = base_dir / "duckdb_staged_vars.json"
    vfile.write_text(json.dumps(svars))
    log(f"{size}: DuckDB over the staged Parquet")
    res["duckdb_staged"] = measure("duckdb", ["--variant", "staged", "--vars", str(vfile), *threads], workdir,
                                   f"{size}-duckdb-staged")
    res["duckdb_staged"]["agreement"] = compare_reference(
        Path(res["duckdb_staged"]["inner"]["result"]), full_root, last)

    # 4. floors
    log(f"{size}: floors")
    warm_landing(gen / "landing")
    res["floor_landing"] = measure("floor-landing", ["--landing", str(gen / "landing")], workdir,
                                   f"{size}-floor-landing")
    res["floor_staged"] = measure("floor-staged", ["--lake", str(full_root), "--date", last.isoformat(),
                                                   "--window-days", str(window_days)], workdir,
                                  f"{size}-floor-staged")

    # 5. the least of the work the contract requires, each part alone (a lower bound; report.mandated_bound)
    log(f"{size}: mandated work alone, one Polars thread")
    warm_landing(gen / "landing")
    res["mandated_floor"] = measure("mandated-floor", ["--landing", str(gen / "landing"), "--lake", str(full_root)],
                                    workdir, f"{size}-mandated-floor", env_extra={"POLARS_MAX_THREADS": "1"})
    res["bench_seconds"] = round(time.perf_counter() - t_size, 1)
    shutil.rmtree(full_root, ignore_errors=True)
    return res


def _check_published(m: dict[str, Any]) -> None:
    inner = m["inner"]
    if inner.get("status") not in ("published", "held"):
        raise RuntimeError(f"{m['label']}: the run did not publish: {inner.get('status')} {inner.get('message')}")


# --------------------------------------------------------------------- profiles
def render_profile(session_file: Path) -> dict[str, Any]:
    """Text report next to the session, plus the top functions by own and total time."""
    from pyinstrument.session import Session

    txt = session_file.with_suffix(".txt")
    subprocess.run([PY, "-m", "pyinstrument", "--load", str(session_file), "-r", "text", "-o", str(txt),
                    "-p", "processor_options.filter_threshold=0.01", "--no-color"], check=True, cwd=str(REPO))
    session = Session.load(str(session_file))
    root = session.root_frame()
    own: dict[str, float] = {}
    total: dict[str, float] = {}

    def walk(frame: Any, stack: frozenset[str], parent: str) -> None:
        if frame.is_synthetic:  # pyinstrument's "[self]" leaf: time spent in the parent itself
            own[parent] = own.get(parent, 0.0) + frame.time
            return
        key = f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"
        if key not in stack:  # count recursion once
            total[key] = total.get(key, 0.0) + frame.time
        if not frame.children:
            own[key] = own.get(key, 0.0) + frame.time
        for c in frame.children:
            walk(c, stack | {key}, key)

    if root is not None:
        walk(root, frozenset(), "?")
    dur = session.duration
    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    transforms_total = sorted(((k, v) for k, v in total.items() if "transforms/" in k), key=lambda kv: -kv[1])[:40]
    return {"file": str(txt), "duration_s": round(dur, 2),
            "top_own": [(k, round(v, 2)) for k, v in top_own],
            "transforms_total": [(k, round(v, 2)) for k, v in transforms_total]}


def save_profile(workdir: Path, key: str, data: dict[str, Any]) -> None:
    """Keep profiles apart from the measurements, so a later unprofiled run does not drop them."""
    p = workdir / "results" / "profiles.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    allp = json.loads(p.read_text()) if p.exists() else {}
    allp[key] = data | {"code_fingerprint": code_fingerprint(), "when": datetime.now().isoformat(timespec="seconds")}
    p.write_text(json.dumps(allp, indent=2))


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# ------------------------------------------------------------------- issue 3.10
def bench_310(workdir: Path, seed: int, *, profile: bool) -> dict[str, Any]:
    """Ingest + validate one delivery day of 5 M review rows vs a bare Polars read of the file."""
    t0 = time.perf_counter()
    gen, _ = ensure_generated(workdir, "S", seed)
    src = workdir / "issue310-src"
    big = src / "landing" / "reviews" / f"dt={ISSUE_310_DAY}" / "reviews_5m.csv"
    made = src / "made.json"
    if not made.exists():
        if src.exists():
            shutil.rmtree(src)
        # The registry and the day's other sources come from the S marketplace's first day.
        for source in ("merchants", "sales", "complaints", "returns"):
            hardlink_tree(gen / "landing" / source / f"dt={ISSUE_310_DAY}",
                          src / "landing" / source / f"dt={ISSUE_310_DAY}")
        log(f"3.10: writing {ISSUE_310_ROWS:,} review rows")
        m = measure("make-reviews", ["--root", str(src), "--rows", str(ISSUE_310_ROWS), "--date", ISSUE_310_DAY,
                                     "--registry", str(gen / "landing" / "merchants" / f"dt={ISSUE_310_DAY}")],
                    workdir, "310-make")
        made.write_text(json.dumps(m["inner"]))
    info = json.loads(made.read_text())
    lake = workdir / "issue310-lake"
    fresh_lake(lake, src / "landing")
    log("3.10: ingest + validate")
    iv = measure("ingest-validate", ["--root", str(lake), "--date", ISSUE_310_DAY], workdir, "310-ingest-validate")
    log("3.10: bare read")
    bare = measure("read-csv", ["--file", str(big)], workdir, "310-bare-read")
    res: dict[str, Any] = {"file": info, "ingest_validate": iv, "bare_read": bare}
    # The day's staged rows are in the run's work folder (validate stages; publishing never ran).
    log("3.10: mandated work alone, one Polars thread")
    res["mandated_floor"] = measure("mandated-floor", ["--landing", str(lake / "landing"),
                                                       "--lake", str(lake / iv["inner"]["work"])],
                                    workdir, "310-mandated-floor", env_extra={"POLARS_MAX_THREADS": "1"})
    if profile:
        fresh_lake(lake, src / "landing")
        prof = workdir / "profiles" / "310-ingest-validate.pyisession"
        prof.parent.mkdir(parents=True, exist_ok=True)
        measure("ingest-validate", ["--root", str(lake), "--date", ISSUE_310_DAY], workdir,
                "310-ingest-validate-profiled", profile=prof)
        save_profile(workdir, "3.10: ingest + validate of 5 M reviews", render_profile(prof))
    shutil.rmtree(lake, ignore_errors=True)
    res["bench_seconds"] = round(time.perf_counter() - t0, 1)
    return res


# ----------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    import duckdb
    import polars as pl
    import pyarrow as pa

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    import importlib.metadata as md

    return {"nproc": os.cpu_count(), "ram_bytes": mem, "cpu": cpu, "python": platform.python_version(),
            "polars": pl.__version__, "duckdb": duckdb.__version__, "pyarrow": pa.__version__,
            "great_expectations": md.version("great_expectations"), "kernel": platform.release(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "when": datetime.now().isoformat(timespec="seconds")}


# ---------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["S", "M"], choices=sorted(SIZES))
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    p.add_argument("--workdir", default="/tmp/bench")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--profile", nargs="*", default=[], choices=[*sorted(SIZES), "310"],
                   help="sizes (and/or 310) to profile with pyinstrument (extra, unmeasured runs)")
    p.add_argument("--skip-310", action="store_true", help="skip the 5 M review rows measurement (issue 3.10)")
    p.add_argument("--duckdb-threads", type=int, default=None, help="default: DuckDB's own (all cores)")
    p.add_argument("--l-budget-minutes", type=float, default=15.0,
                   help="run L only when the extrapolated full recompute fits in this budget")
    p.add_argument("--force", action="store_true", help="run every requested size whatever the estimate")
    p.add_argument("--render-only", action="store_true", help="re-render the report from saved results")
    p.add_argument("--code-from", default=None,
                   help="measure transforms/ and expectations/ of this tree instead of the working tree's")
    p.add_argument("--code-label", default=None, help="how the report describes the measured code (--code-from)")
    a = p.parse_args(argv)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    resdir = workdir / "results"
    resdir.mkdir(exist_ok=True)
    from report import render  # the Markdown and the chart

    t0 = time.perf_counter()
    if not a.render_only:
        def skip_reason(size: str) -> str | None:
            # Judged when L's turn comes, so an M measured in this same run is what it is judged on.
            return l_feasible(resdir, a.l_budget_minutes) if size == "L" and not a.force else None

        def skip(reason: str) -> None:
            log(f"L: skipped: {reason}")
            (resdir / "L-skipped.json").write_text(json.dumps({"reason": reason}))

        # L is judged again when its turn comes (on the M of this run); skip it up front only when
        # nothing measured before it in this run could change the verdict.
        to_run = list(a.sizes)
        if "L" in to_run and "M" not in to_run and (reason := skip_reason("L")):
            skip(reason)
            to_run.remove("L")
        measured: list[str] = []
        if to_run or not a.skip_310:
            snap = snapshot_code(workdir, src=Path(a.code_from) if a.code_from else None, label=a.code_label)
            machine = machine_info() | {"code": snap, "argv": sys.argv[1:]}
            for size in to_run:
                reason = skip_reason(size)
                if reason:
                    skip(reason)
                    continue
                r = bench_size(size, workdir, a.seed, profile=size in a.profile, duckdb_threads=a.duckdb_threads)
                (resdir / f"{size}.json").write_text(json.dumps(r, indent=2, default=str))
                measured.append(size)
                if size == "L":
                    (resdir / "L-skipped.json").unlink(missing_ok=True)
            if not a.skip_310:
                r310 = bench_310(workdir, a.seed, profile="310" in a.profile)
                (resdir / "310.json").write_text(json.dumps(r310, indent=2, default=str))
            machine["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
            machine["bench_seconds"] = round(time.perf_counter() - t0, 1)
            machine["sizes_measured"] = measured
            (resdir / "machine.json").write_text(json.dumps(machine, indent=2))
    out = Path(a.out)
    render(resdir, out, sizes=[s for s in ("S", "M", "L") if (resdir / f"{s}.json").exists()])
    log(f"wrote {out}")
    return 0


def l_feasible(resdir: Path, budget_min: float) -> str | None:
    """None when L looks feasible; else why not (extrapolated from M, or S, at constant cost per event)."""
    ref = next((s for s in ("M", "S") if (resdir / f"{s}.json").exists()), None)
    if ref is None:
        return None
    r = json.loads((resdir / f"{ref}.json").read_text())
    scale = SIZES["L"][0] * SIZES["L"][1] / (SIZES[ref][0] * SIZES[ref][1])
    full = r["full"]["wall_s"] * scale
    gen = r["generation"]["wall_s"] * scale
    total = full * 2 + gen  # full LAST plus full LAST-1 for the incremental lake
    peak_gib = r["full"]["peak_mib"] * scale / 1024
    ram_gib = (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 2**30
    reasons = []
    if total / 60 > budget_min:
        reasons.append(f"time: extrapolated from {ref} at constant cost per event ({scale:.0f}x the events), "
                       f"generation ~{gen / 60:.0f} min + two full recomputes ~{2 * full / 60:.0f} min = "
                       f"~{total / 60:.0f} min, over the {budget_min:.0f}-minute budget on this shared 2-core machine")
    if peak_gib > 0.8 * ram_gib:
        reasons.append(f"memory: scaling the full recompute's peak with the events ({r['full']['peak_mib'] / 1024:.1f} "
                       f"GiB at {ref}), ~{peak_gib:.0f} GiB could be needed at L, more than this machine's "
                       f"{ram_gib:.0f} GiB of RAM (no swap): the run would be killed by the OOM killer")
    return "; ".join(reasons) or None


if __name__ == "__main__":
    raise SystemExit(main())
