#!/usr/bin/env bash
# Run the Airflow CLI against this repository's DAGs with a repo-local metadata DB.
#
#   bash .ci/airflow.sh dags test merchant_reputation 2026-02-28
#   bash .ci/airflow.sh dags list
#
# AIRFLOW_HOME is <repo>/airflow_home (git-ignored): SQLite metadata DB, config, logs.
# The DB is migrated once, quietly, on first use. Pipeline settings (REPUTATION_ROOT,
# REPUTATION_BUSINESS_TIMEZONE, ...) are passed through from the environment.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

export AIRFLOW_HOME="$REPO/airflow_home"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Quiet, local defaults; any of them can be overridden from the environment.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__LOGGING__COLORED_CONSOLE_LOG="${AIRFLOW__LOGGING__COLORED_CONSOLE_LOG:-False}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning,ignore::FutureWarning,ignore:Could not import graphviz:UserWarning}"

if [[ -x "$REPO/.venv/bin/airflow" ]]; then
  AIRFLOW="$REPO/.venv/bin/airflow"
elif command -v airflow >/dev/null 2>&1; then
  AIRFLOW="$(command -v airflow)"
else
  echo "airflow not found: create $REPO/.venv and run 'pip install -e .[dev]' in it" >&2
  exit 2
fi

mkdir -p "$AIRFLOW_HOME"
# A marker, not just airflow.db: a command run before migrating leaves an empty airflow.db.
MARKER="$AIRFLOW_HOME/.db-migrated"
if [[ ! -f "$AIRFLOW_HOME/airflow.db" || ! -f "$MARKER" ]]; then
  MIGRATE_LOG="$AIRFLOW_HOME/db-migrate.log"
  if "$AIRFLOW" db migrate >"$MIGRATE_LOG" 2>&1; then
    touch "$MARKER"
  else
    echo "airflow db migrate failed (log: $MIGRATE_LOG):" >&2
    tail -n 30 "$MIGRATE_LOG" >&2
    exit 1
  fi
fi

# The merchant_scores asset's URI is <lake root>/scores. Airflow keeps one active asset per
# name and only a running scheduler re-activates it under a new URI, so after switching
# REPUTATION_ROOT a `dags test` fails at publish with "inactive assets in its outlets".
LAKE="${REPUTATION_ROOT:-data/lake}"
LAKE="${LAKE#file://}"
LAKE="${LAKE%/}"
if [[ "$LAKE" != /* && "$LAKE" != *://* ]]; then LAKE="$REPO/$LAKE"; fi
LAKE_MARK="$AIRFLOW_HOME/.lake-root"
if [[ "${1:-}" == "dags" && "${2:-}" == "test" ]]; then
  if [[ ! -f "$LAKE_MARK" ]]; then
    printf '%s\n' "$LAKE" >"$LAKE_MARK"
  elif [[ "$(cat "$LAKE_MARK")" != "$LAKE" ]]; then
    echo "warning: $AIRFLOW_HOME was first used with lake root $(cat "$LAKE_MARK"), now $LAKE;" \
         "publish may fail with 'inactive assets' (Airflow keeps the old merchant_scores asset active)." \
         "Remove $AIRFLOW_HOME to start a fresh metadata DB for this root." >&2
  fi
fi

exec "$AIRFLOW" "$@"
