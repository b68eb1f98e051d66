"""The same pipeline against an S3-compatible server (moto in server mode on localhost)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from tests.landing import small_marketplace

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "REPUTATION_CACHE_DIR": str(tmp_path_factory.mktemp("mirror"))}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        fs = _fs(env)
        fs.create_dir("lakebucket")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _fs(env: dict[str, str]) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"), scheme="http",
                             access_key="test", secret_key="test", region="us-east-1",
                             allow_bucket_creation=True)


def _upload_tree(fs: pafs.S3FileSystem, local: Path, prefix: str) -> None:
    for path in local.rglob("*"):
        if path.is_file():
            with fs.open_output_stream(f"{prefix}/{path.relative_to(local).as_posix()}") as out:
                out.write(path.read_bytes())


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("REPUTATION_")} | env
    return subprocess.run([sys.executable, "-m", "transforms", *args], env=full, capture_output=True, text=True,
                          timeout=300, check=False)


def test_run_reads_landing_from_s3_and_publishes_data_then_manifest(s3_env: dict[str, str], tmp_path: Path) -> None:
    local = tmp_path / "src"
    last = small_marketplace(local, days=3)
    fs = _fs(s3_env)
    _upload_tree(fs, local / "landing", "lakebucket/prod/landing")
    root = "s3://lakebucket/prod"

    proc = _cli(s3_env, "run", "--date", str(last), "--root", root)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    manifest_path = f"lakebucket/prod/runs/score_date={last}/manifest.json"
    with fs.open_input_stream(manifest_path) as fh:
        manifest = json.loads(fh.read())
    assert manifest["status"] == "published"
    scores = [i for i in fs.get_file_info(pafs.FileSelector(f"lakebucket/prod/scores/score_date={last}"))
              if i.path.endswith(".parquet")]
    assert len(scores) == 1
    table = pq.read_table(scores[0].path, filesystem=fs)
    assert table.num_rows == 3
    assert table.schema.metadata[b"run_id"].decode() == manifest["run_id"]
    # The manifest was written after the data it names.
    assert fs.get_file_info(manifest_path).mtime >= scores[0].mtime

    # A second machine (fresh mirror) reruns the date and gets the same rows.
    again = _cli(s3_env | {"REPUTATION_CACHE_DIR": str(tmp_path / "other-mirror")}, "run", "--date", str(last),
                 "--root", root)
    assert again.returncode == 0, again.stderr
    assert pq.read_table(scores[0].path, filesystem=fs).drop(["run_id"]).equals(table.drop(["run_id"]))

    status = _cli(s3_env, "status", "--root", root)
    assert status.returncode == 0, status.stderr
    assert str(last) in status.stdout


def test_a_rejected_run_publishes_only_its_failed_manifest(s3_env: dict[str, str], tmp_path: Path) -> None:
    local = tmp_path / "src"
    last = small_marketplace(local, days=2)
    (local / "landing" / "reviews" / f"dt={last}" / "broken.parquet").write_bytes(b"PAR1 not really")
    fs = _fs(s3_env)
    _upload_tree(fs, local / "landing", "lakebucket/bad/landing")
    proc = _cli(s3_env, "run", "--date", str(last), "--root", "s3://lakebucket/bad")
    assert proc.returncode == 3, proc.stderr
    assert "broken.parquet" in proc.stderr
    assert not fs.get_file_info(pafs.FileSelector("lakebucket/bad/scores", allow_not_found=True))
    with fs.open_input_stream(f"lakebucket/bad/runs/score_date={last}/manifest.json") as fh:
        assert json.loads(fh.read())["status"] == "failed"
    shutil.rmtree(tmp_path / "src")


@pytest.mark.airflow
def test_the_dag_runs_against_the_object_store_with_two_shards(s3_env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    from transforms.policy import default_policy_path

    local = tmp_path / "src"
    last = small_marketplace(local, days=2)
    fs = _fs(s3_env)
    _upload_tree(fs, local / "landing", "lakebucket/dag/landing")
    policy = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    policy["shards"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    airflow = Path(sys.executable).with_name("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REPUTATION_"))} | s3_env | {
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"), "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "REPUTATION_ROOT": "s3://lakebucket/dag",
        "REPUTATION_POLICY_PATH": str(tmp_path / "p.yaml"), "REPUTATION_AIRFLOW_RETRIES": "0",
        "REPUTATION_CACHE_DIR": str(tmp_path / "worker-mirror")}
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180,
                             check=False)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    proc = subprocess.run([str(airflow), "dags", "test", "merchant_reputation", str(last)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    with fs.open_input_stream(f"lakebucket/dag/runs/score_date={last}/manifest.json") as fh:
        manifest = json.loads(fh.read())
    assert manifest["status"] == "published"
    assert manifest["timings_seconds"]["score_shards"] >= 0
    # The run's scratch folder does not outlive it in the store.
    assert not [i for i in fs.get_file_info(pafs.FileSelector("lakebucket/dag/_attempts", recursive=True,
                                                                allow_not_found=True)) if i.type == pafs.FileType.File]
