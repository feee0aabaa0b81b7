"""The ``verge`` command line. Thin: parse, call the function that does the work, print.

One module per group of commands; this module makes the ``verge`` group and adds each
module's commands to it (as a Flask app adds its blueprints' commands with
``app.cli.add_command``). The modules import nothing back from here: what they share (the
``UserError``, the error mapping, the ``with_database`` decorator) is ``verge.clikit``.

    batches.py     submit, status, requeue
    processes.py   worker, beat, up
    training.py    train binary, retrain, models list|activate|rollback|rescore
    db.py          db upgrade|current
    exports.py     export, import label-studio
    gold.py        gold add
    info.py        settings, demo
    webui/cli.py   web, users add|passwd|token|list

Errors a user can cause end in one line on stderr and exit status 1, never a traceback.
"""
from __future__ import annotations

import click

from webui import cli as webui_cli

from . import batches, db, exports, gold, info, processes, training


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """verge: submit images, score them with CLIP workers, review the uncertain ones."""


for _command in (
    batches.submit, batches.status, batches.requeue,
    processes.worker, processes.beat, processes.up,
    training.train, training.retrain, training.models,
    db.db,
    exports.export, exports.import_,
    gold.gold,
    info.settings_cmd, info.demo,
    webui_cli.web, webui_cli.users,
):
    main.add_command(_command)
del _command
