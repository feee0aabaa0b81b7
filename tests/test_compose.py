"""docker-compose.yml is validated by a real validator (Debian's docker-compose, which needs no
engine) and every verge command it runs must exist in our CLI."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import need

ROOT = Path(__file__).resolve().parents[1]


def compose_config(env_extra: dict) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    need("docker-compose (Debian package)", exe is not None, "apt-get install docker-compose")
    env = {k: v for k, v in os.environ.items()
           if k not in ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH")}
    return subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={**env, **env_extra}, capture_output=True, text=True, timeout=60)


SECRETS = {"POSTGRES_PASSWORD": "not-a-real-secret", "MINIO_ROOT_USER": "verge-admin",
           "MINIO_ROOT_PASSWORD": "not-a-real-minio-secret", "FLOWER_BASIC_AUTH": "admin:not-a-real-secret"}


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_compose_file_is_valid_and_runs_only_commands_that_exist():
    proc = compose_config(SECRETS)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    services = cfg["services"]
    assert {"redis", "postgres", "migrate", "worker", "beat", "web"} <= set(services)
    entry = re.search(r'^ENTRYPOINT \["(\w+)"\]', dockerfile(), re.M).group(1)
    assert entry == "verge"
    built = {name: s for name, s in services.items() if "build" in s}
    assert built, "no service is built from the repo's Dockerfile"
    for name, svc in built.items():
        cmd = svc["command"]
        program = (svc.get("entrypoint") or [entry])[0]
        if program == "verge":
            out = subprocess.run([sys.executable, "-m", "verge", *cmd, "--help"], capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, f"service {name} runs `verge {' '.join(cmd)}`, which does not exist:\n{out.stderr}"
        elif program == "celery":
            out = subprocess.run([sys.executable, "-m", "celery", *cmd, "--help"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, f"service {name} runs `celery {' '.join(cmd)}`:\n{out.stderr}"
        else:
            assert program == "gunicorn", f"service {name} runs an unexpected program {program}"
            assert (Path(sys.executable).parent / "gunicorn").exists()
            factory = cmd[-1]  # module:callable() -- it must build the app
            module, call = factory.split(":")
            check = subprocess.run([sys.executable, "-c", f"import {module}; {module}.{call.rstrip('()')}"],
                                   capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stderr
        assert svc["environment"]["VERGE_BROKER_URL"].startswith("redis://")
        assert svc["environment"]["VERGE_DATABASE_URL"].startswith("postgresql+psycopg://")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_compose_refuses_to_run_without_a_database_password():
    proc = compose_config({k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"})
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stderr


def test_flower_runs_behind_authentication_with_the_workers_settings():
    proc = compose_config({k: v for k, v in SECRETS.items() if k != "FLOWER_BASIC_AUTH"})
    assert proc.returncode != 0 and "FLOWER_BASIC_AUTH" in proc.stderr
    flower = yaml.safe_load(compose_config(SECRETS).stdout)["services"]["flower"]
    assert flower["entrypoint"] == ["celery"] and flower["command"][:3] == ["-A", "workers.app", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    worker = yaml.safe_load(compose_config(SECRETS).stdout)["services"]["worker"]
    for key in ("VERGE_BROKER_URL", "VERGE_DATABASE_URL", "VERGE_DATA_DIR"):
        assert flower["environment"][key] == worker["environment"][key]


def test_compose_refuses_to_run_without_object_storage_credentials():
    proc = compose_config({"POSTGRES_PASSWORD": "x", "MINIO_ROOT_USER": "u"})
    assert proc.returncode != 0 and "MINIO_ROOT_PASSWORD" in proc.stderr


def test_compose_shares_no_volume_keeps_images_in_minio_and_pins_each_worker_to_a_gpu():
    proc = compose_config(SECRETS)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    # MinIO, its credentials from the environment, and the bucket made at start
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == SECRETS["MINIO_ROOT_PASSWORD"]
    bucket = services["minio-bucket"]
    assert "mc mb --ignore-existing" in " ".join(bucket["command"]) and "public" not in " ".join(bucket["command"])
    # every verge process speaks S3 the standard way, with the same credentials
    built = {name: s for name, s in services.items() if "build" in s}
    for name, svc in built.items():
        env = svc["environment"]
        assert env["VERGE_BLOB_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_SECRET_ACCESS_KEY"] == SECRETS["MINIO_ROOT_PASSWORD"]
    # no named volume mounted by two services
    owners: dict = {}
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            owners.setdefault(source, []).append(name)
    shared = {v: names for v, names in owners.items() if len(names) > 1}
    assert not shared, f"volumes shared between services: {shared}"
    # one GPU per worker, each a different one (count: 1 with --scale would repeat device 0)
    workers = {name: s for name, s in built.items() if s["command"][:3] == ["worker", "--queues", "scoring"]}
    assert len(workers) >= 2
    ids = []
    for name, svc in workers.items():
        [dev] = svc["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in dev and len(dev["device_ids"]) == 1, (name, dev)
        ids += dev["device_ids"]
    assert len(set(ids)) == len(ids), f"two workers share a GPU: {ids}"


def test_dockerfile_copies_what_exists():
    for src in re.findall(r"^COPY (\S+) ", dockerfile(), re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is not in the repo"
