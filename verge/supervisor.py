"""The process supervisor behind ``verge up`` and ``verge demo``: a scoring worker, a jobs
worker, beat and (optionally) the web UI, each a ``python -m verge`` child process, run until
Ctrl-C or until one of them stops; then the others are stopped.

(Not to be confused with ``workers.metrics.serve``, the HTTP exporter of a worker's metrics.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from .settings import Settings


def supervise(settings: Settings, web: bool = True, env: dict | None = None) -> None:
    """Run a worker, beat and (optionally) the web UI as child processes until Ctrl-C or until
    one of them stops; then stop the others."""
    env = {**os.environ, **(env or {})}
    # the jobs (sweeper, retrain, re-score) get a worker process of their own: a scoring backlog
    # never holds them up, and a retrain never takes a scoring process's place
    commands = {"worker": ["worker", "--queues", "scoring"],
                "jobs": ["worker", "--queues", "jobs", "-c", "1", "--metrics-port", "0"],
                "beat": ["beat"], **({"web": ["web"]} if web else {})}
    names = list(commands)
    procs = {name: subprocess.Popen([sys.executable, "-m", "verge", *cmd], env=env)
             for name, cmd in commands.items()}
    where = f"http://{settings.web_host}:{settings.web_port}/" if web else "no web UI"
    click.echo(f"verge is up ({', '.join(names)}; data in {settings.data_dir.resolve()}; {where}); "
               f"submit with `verge submit PATH`; Ctrl-C stops")
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        stopped = [n for n, p in procs.items() if p.poll() is not None]
        click.echo(f"verge: {', '.join(stopped)} stopped; stopping the rest", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
