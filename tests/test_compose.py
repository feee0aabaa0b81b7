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
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH")}
    return subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={**env, **env_extra}, capture_output=True, text=True, timeout=60)


SECRETS = {"POSTGRES_PASSWORD": "not-a-real-secret", "FLOWER_BASIC_AUTH": "admin:not-a-real-secret"}


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


def test_dockerfile_copies_what_exists():
    for src in re.findall(r"^COPY (\S+) ", dockerfile(), re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is not in the repo"
