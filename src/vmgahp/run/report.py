"""What ``vmgahp run`` tells the user: the header before the run, the report after it.

Only printing: what happened is :class:`vmgahp.run.starter.Outcome`, what it
means for the job :func:`vmgahp.run.starter.explain_start_failure`, the files
:mod:`vmgahp.run.output`. Errors go to stderr as ``vmgahp run: ...``, the rest
to stdout.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from vmgahp.run.output import REMOVED, STALE
from vmgahp.run.plan import Plan
from vmgahp.run.progress import hms, size
from vmgahp.run.scratch import GAHP_LOG, disk_usage
from vmgahp.run.starter import KILLED, STOPPED, Outcome, explain_start_failure
from vmgahp.run.submit import Job


def err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"vmgahp run: {text}\n")
    sys.stderr.flush()


def hints_and_warnings(job: Job) -> None:
    """What a pool would do differently (loud: the run would not test what the pool runs), then the warnings."""
    for hint in job.hints:
        sys.stdout.flush()
        sys.stderr.write(f"{hint}\n")
    for warning in job.warnings:
        err(f"warning: {warning}")
    sys.stderr.flush()


def header(plan: Plan) -> None:
    job = plan.job
    print(f"vmgahp run: {plan.submit_path} -> {job.vm_type} job {job.executable!r} "
          f"({job.memory_mib} MiB, {job.vcpus} vCPU{'s' if job.vcpus != 1 else ''}"
          f"{', checkpointable' if job.checkpoint else ''}{', snapshot disks' if job.snapshot_disk else ''})")
    print(f"  job user     {plan.user.login} (uid {plan.user.uid}, gid {plan.user.gid}: {plan.user_why})")
    print(f"  VM name      {job.vm_name}")
    print(f"  output       {plan.output}")
    for default in plan.defaults:
        print(f"  default      {default.knob} = {default.value} ({default.why}; "
              f"set {default.knob} in the configuration to override)")
    if plan.resume_dir is not None:
        names = ", ".join(p.name for p in plan.resume_files)
        print(f"  resuming     from {plan.resume_dir} ({names})")
    sys.stdout.flush()


def start_failure(outcome: Outcome) -> bool:
    """The VM did not start: the token, what it means on a pool, the gahp's reasons. True: held."""
    token = outcome.token or "VMGAHP_ERR_INTERNAL"
    held, meaning = explain_start_failure(token)
    err(f"the VM did not start: {token}")
    err(f"  {meaning}")
    for detail in outcome.details:
        err(f"  gahp log: {detail}")
    return held


def gahp_failure(outcome: Outcome) -> None:
    err(f"the gahp failed: {outcome.reason}")
    for detail in outcome.details:
        err(f"  {detail}")


def ending(plan: Plan, outcome: Outcome) -> None:
    """How a run that got past START (or was interrupted before it) ended."""
    if outcome.kind == STOPPED:
        print("== the VM stopped by itself ==")
        print(f"  exit status  {outcome.gahp_exit} (the gahp's, which condor_starter reports as the job's)")
    elif outcome.kind == KILLED:
        print("== killed (interrupted twice) ==")
    elif outcome.vm_started is None:
        print("== interrupted before the VM started ==")
    else:
        how = "Ctrl-C" if outcome.reason == "interrupt" else f"--max-wall {plan.max_wall:g} s"
        print(f"== vacated ({how}) ==")
    if outcome.vm_started is not None:
        print(f"  wall time    {hms(outcome.wall)}")
        print(f"  CPU time     {_cpu(outcome)}")
    if outcome.stop_error:
        print(f"  stop         CONDOR_VM_STOP failed: {outcome.stop_error}")
    if outcome.kill_mode and outcome.kill_mode != "ok":
        print(f"  kill mode    {outcome.kill_mode}")


def no_output() -> None:
    print("  output       none (vm_no_output_vm = true)")


def output(directory: Path, copied: list[Path]) -> None:
    print(f"  output       {directory}/" + ("" if copied else " (no new or changed files)"))
    _list_files(copied)


def retired_checkpoint(what: str, path: Path) -> None:
    """What :func:`vmgahp.run.output.retire_checkpoint` did."""
    if what == REMOVED:
        print(f"  (removed the used checkpoint {path})")
    elif what == STALE:
        print(f"  note         {path} is an older checkpoint of this job, now stale")


def vacated(plan: Plan, outcome: Outcome) -> None:
    """The checkpoint of a vacated VM, and how to resume from it."""
    if outcome.checkpoint_dir is not None:
        files = sorted(p for p in outcome.checkpoint_dir.iterdir() if p.is_file())
        print(f"  checkpoint   {outcome.checkpoint_dir}/")
        _list_files(files)
        command = ["vmgahp", "run", str(plan.submit_path), "--resume", str(outcome.checkpoint_dir)]
        if plan.output_given:
            command += ["--output", str(plan.output)]
        print(f"  resume with  {shlex.join(command)}")
    elif plan.job.checkpoint:
        print(f"  checkpoint   FAILED: {outcome.checkpoint_error}")
        for detail in outcome.details:
            print(f"    gahp log: {detail}")
    else:
        print("  checkpoint   none: the job does not set vm_checkpoint = true, so a rerun starts over")


def scratch_kept(scratch: Path, as_error: bool) -> None:
    where = f"scratch kept {scratch} (gahp log: {scratch / GAHP_LOG})"
    if as_error:
        err(f"  {where}")
    else:
        print(f"  {where}")


def _list_files(paths: list[Path]) -> None:
    width = max((len(p.name) for p in paths), default=0)
    for path in paths:
        apparent, allocated = disk_usage(path)
        sparse = f" ({size(allocated)} on disk)" if allocated < apparent * 0.9 and apparent > 1 << 20 else ""
        print(f"    {path.name.ljust(width)}  {size(apparent)}{sparse}")


def _cpu(outcome: Outcome) -> str:
    status = outcome.last_status
    if status is None or status.cpu_time is None:
        return "unknown (no Running status was seen)"
    return f"{status.cpu_time:.1f} s"
