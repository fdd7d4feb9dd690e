"""What a ``vmgahp run`` will do, decided before anything runs.

:func:`make_plan` reads the submit file into the job ad condor_submit would
make, chooses the job user, checks a ``--resume`` directory, and works out
where the output goes and which host defaults the gahp gets.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vmgahp.job.access import JobUser
from vmgahp.run import defaults as defaults_mod
from vmgahp.run.scratch import OWN_FILES, choose_job_user
from vmgahp.run.submit import Identity, Job, build, full_hostname, load


class UsageError(Exception):
    """The command line asks for something that cannot be done."""


@dataclass
class Plan:
    submit_path: Path
    job: Job
    user: JobUser
    user_why: str  # how the job user was chosen, for the header
    output: Path
    output_given: bool
    resume_dir: Path | None
    resume_files: list[Path]
    max_wall: float | None = None
    defaults: list[defaults_mod.Default] = field(default_factory=list)


def make_plan(options: argparse.Namespace) -> Plan:
    """Raises :class:`vmgahp.run.submit.SubmitError` or :class:`UsageError`."""
    submit_path = Path(options.submit_file)
    description = load(submit_path)
    chosen = choose_job_user(submit_path.resolve().parent)
    resume_dir = Path(options.resume).resolve() if options.resume else None
    resume_files: list[Path] = []
    if resume_dir is not None:
        if not resume_dir.is_dir():
            raise UsageError(f"--resume {options.resume}: not a directory")
        resume_files = sorted(p for p in resume_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not resume_files:
            raise UsageError(f"--resume {options.resume}: the directory holds no checkpoint files")
    job = build(
        description,
        Identity(chosen.user.login, full_hostname()),
        cluster_id=options.cluster_id,
        default_request_cpus=configured("JOB_DEFAULT_REQUESTCPUS", "1"),
    )
    clash = {item.name for item in job.inputs} & set(OWN_FILES)
    if clash:
        raise UsageError(f"an input file is named {clash.pop()}, which vmgahp run uses itself")
    if options.output:
        output, given = Path(options.output).resolve(), True
    else:
        name = re.sub(r"[^A-Za-z0-9._+-]+", "_", os.path.basename(job.executable)).strip("._") or "job"
        base = submit_path.resolve().parent
        if not os.access(base, os.W_OK):
            base = Path.cwd()
        output, given = base / f"{name}.out", False
    try:
        host_defaults = defaults_mod.choose(job.vm_type, defaults_mod.configured)
    except OSError as exc:
        raise UsageError(f"cannot work out defaults for this host: {exc}") from exc
    return Plan(submit_path, job, chosen.user, chosen.why, output, given, resume_dir, resume_files,
                options.max_wall, host_defaults)


def configured(knob: str, default: str) -> str:
    """A knob from HTCondor's configuration, or ``default`` without one."""
    try:
        import htcondor2

        return str(htcondor2.param.get(knob, default))
    except Exception:  # noqa: BLE001 - no usable configuration
        return default
