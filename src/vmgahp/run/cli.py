"""``vmgahp run JOB.sub``: run one VM-universe job here, as condor_starter would.

    vmgahp run JOB.sub [--output DIR] [--resume DIR] [--status-interval S]
                       [--max-wall S] [--scratch-root DIR] [--keep-scratch]
                       [--cluster-id N] [--gahp PATH] [-v]

1. The submit file becomes the job ad condor_submit would make (errors name
   the line: ``JOB.sub:7: ...``).
2. A fresh scratch directory gets the job's input files, as the starter's
   file transfer would put them there.
3. ``vmgahp -f -M 3`` is driven through the starter's conversation; a status
   line shows the VM's state, CPU time and elapsed time.
4. When the VM powers itself off, the new or changed files (the disks, or
   their qcow2 overlays with ``vm_snapshot_disk``) go to ``--output``.
5. Ctrl-C vacates: with ``vm_checkpoint = true`` the VM is checkpointed into
   ``--output``/checkpoint first; ``--resume`` that directory restarts it
   there (its files are transferred into the scratch directory, as the
   shadow's spool is; the ad is the first run's, as the starter sends it). A second Ctrl-C kills the VM at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from vmgahp.job.access import JobUser, can_enter
from vmgahp.job.workdir import give_tree_to
from vmgahp.protocol.env import gahp_environment
from vmgahp.run import defaults as defaults_mod
from vmgahp.run import output as output_mod
from vmgahp.run import report
from vmgahp.run import scratch as scratch_mod
from vmgahp.run.plan import Plan, UsageError, make_plan
from vmgahp.run.progress import Progress, size
from vmgahp.run.starter import FAILED, START_FAILED, STOPPED, VACATED, Interrupts, Outcome, Starter, StarterSettings
from vmgahp.run.submit import Job, SubmitError

EXIT_OK = 0  # the VM ended by itself
EXIT_FAILED = 1  # the gahp failed, or vmgahp run could not prepare the job
EXIT_USAGE = 2  # bad command line or submit file
EXIT_HELD = 3  # START failed with a token that puts the job on hold
EXIT_REQUEUED = 4  # START failed with any other token (the job would be requeued)
EXIT_MAX_WALL = 124  # vacated because --max-wall passed (as timeout(1))
EXIT_INTERRUPTED = 130  # vacated or killed by Ctrl-C (128 + SIGINT)

EPILOG = """\
exit status: 0 the VM powered itself off; 1 the gahp failed; 2 bad command line or
submit file; 3 the VM did not start and the job would be held; 4 the VM did not start
and the job would be requeued; 124 vacated after --max-wall; 130 vacated (or killed) by
Ctrl-C or SIGTERM.

The hypervisor and the gahp's limits come from HTCondor's configuration (CONDOR_CONFIG,
_CONDOR_<KNOB>), e.g. _CONDOR_VM_MEMORY=2048 or _CONDOR_VM_KVM_LIBVIRT_URI=qemu:///system.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmgahp run",
        description="Run one VM-universe job locally, the way condor_starter runs it, "
        "to test a VM image before submitting it to a pool.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submit_file", metavar="JOB.sub", help="an HTCondor submit description (universe = vm)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="where the job's output goes (default: <executable>.out next to JOB.sub, "
                        "or in the current directory); a checkpoint goes to DIR/checkpoint")
    parser.add_argument("--resume", metavar="DIR", help="restart from a checkpoint directory")
    parser.add_argument("--status-interval", metavar="S", type=_positive_float, default=2.0,
                        help="seconds between CONDOR_VM_STATUS polls (default 2)")
    parser.add_argument("--max-wall", metavar="S", type=_positive_float,
                        help="vacate the VM after S seconds, as Ctrl-C would (exit 124)")
    parser.add_argument("--scratch-root", metavar="DIR",
                        help="make the scratch directory here (default: $TMPDIR or /tmp); it needs room "
                        "for the job's disks and must be reachable by the job user")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch directory afterwards")
    parser.add_argument("--cluster-id", metavar="N", type=int, default=1,
                        help="ClusterId of the job (default 1); the VM is named <user>_<domain>_<N>.0, "
                        "so two concurrent runs of one user need different ids")
    parser.add_argument("--gahp", metavar="PATH",
                        help="the gahp to drive, as the starter's VM_GAHP_SERVER (default: this vmgahp)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the conversation with the gahp on stderr")
    return parser


def run_main(args: list[str]) -> int:
    parser = build_parser()
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return int(exc.code or 0)
    try:
        plan = make_plan(options)
    except (SubmitError, UsageError) as exc:
        report.err(str(exc))
        return EXIT_USAGE
    report.hints_and_warnings(plan.job)  # before anything runs
    return _run(plan, options)


def _starter_settings(options: argparse.Namespace) -> StarterSettings:
    settings = StarterSettings(status_interval=options.status_interval, max_wall=options.max_wall)
    try:  # the starter's knobs (spec 5.2), from HTCondor's configuration
        import htcondor2

        timeout = int(htcondor2.param.get("VM_GAHP_REQ_TIMEOUT", "300"))
        settings.request_timeout = float(timeout)
        settings.start_timeout = float(timeout + 120)
        settings.status_max_errors = max(1, int(htcondor2.param.get("VM_STATUS_MAX_ERROR", "5")))
    except Exception:  # noqa: BLE001 - no usable configuration: the built-in defaults
        pass
    return settings


def gahp_env(job: Job, scratch: Path, user: JobUser,
             defaults: tuple[defaults_mod.Default, ...] | list[defaults_mod.Default] = ()) -> dict[str, str]:
    """The gahp's environment as the starter builds it (spec 1.3), plus the
    host defaults for knobs the configuration does not set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGAHP_")}  # none inherited
    for default in defaults:
        env[f"_CONDOR_{default.knob}"] = default.value
    package_root = str(Path(__file__).resolve().parents[2])  # so `python -m vmgahp` finds this vmgahp
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.update(
        _CONDOR_VM_GAHP_LOG=str(scratch / scratch_mod.GAHP_LOG),
        _CONDOR_VM_GAHP_LOG_FORMAT="json",  # run/starter reads the gahp's log to explain failures
        _CONDOR_JOB_IWD=str(job.iwd),
        BATCH_SYSTEM="HTCondor",
    )
    env.update(gahp_environment(job.vm_type, str(scratch), user.uid, user.gid))
    return env


def _run(plan: Plan, options: argparse.Namespace) -> int:
    job, out = plan.job, sys.stdout
    tty = out.isatty()
    progress = Progress(job.executable, out, tty)
    report.header(plan)
    interrupts = Interrupts()
    scratch: Path | None = None
    keep = options.keep_scratch
    try:
        try:
            scratch = scratch_mod.make_scratch(Path(options.scratch_root).resolve() if options.scratch_root else None)
            if os.geteuid() == 0 and not can_enter(str(scratch), plan.user):  # root hands it to the job user
                report.err(f"the job user {plan.user.login} (uid {plan.user.uid}) cannot reach {scratch}: a directory "
                           "above it is private; choose another place with --scratch-root (or TMPDIR)")
                return EXIT_FAILED
            names = scratch_mod.transfer_in(scratch, job.inputs, plan.resume_files)
            give_tree_to(scratch, plan.user.uid, plan.user.gid)
        except OSError as exc:
            report.err(f"cannot prepare the scratch directory: {exc}")
            keep = True
            return EXIT_FAILED
        interrupts.install()  # from here on Ctrl-C vacates (before, it just stops the copying)
        transferred = output_mod.TransferredIn(scratch, scratch_mod.snapshot(scratch),
                                               tuple(p.name for p in plan.resume_files))
        input_bytes = sum(state[0] for state in transferred.state.values())
        progress.say(f"  scratch      {scratch} ({len(names)} input file{'s' if len(names) != 1 else ''}, "
                     f"{size(input_bytes)})")
        starter = Starter(
            vm_type=job.vm_type,
            vm_name=job.vm_name,
            checkpoint=job.checkpoint,
            ad_lines=job.ad_lines(),
            scratch=scratch,
            env=gahp_env(job, scratch, plan.user, plan.defaults),
            log_path=scratch / scratch_mod.GAHP_LOG,
            stderr_path=scratch / scratch_mod.GAHP_STDERR,
            settings=_starter_settings(options),
            progress=progress,
            interrupts=interrupts,
            on_checkpoint=lambda: output_mod.save_checkpoint(transferred, plan.output, plan.user),
            trace=sys.stderr if options.verbose else None,
            server=os.path.abspath(options.gahp) if options.gahp else None,
        )
        outcome = starter.run()
        progress.clear()
        if outcome.kind in (START_FAILED, FAILED):
            keep = True
        try:
            code = _finish(plan, outcome, transferred)
        except OSError as exc:
            report.err(f"cannot copy the job's output to {plan.output}: {exc}")
            keep = True
            code = EXIT_FAILED
        if keep:
            report.scratch_kept(scratch, as_error=code == EXIT_FAILED or outcome.kind == START_FAILED)
        return code
    except KeyboardInterrupt:  # only before the handlers were installed
        report.err("interrupted")
        return EXIT_INTERRUPTED
    finally:
        interrupts.restore()
        if scratch is not None and not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        sys.stdout.flush()


def _finish(plan: Plan, outcome: Outcome, transferred: output_mod.TransferredIn) -> int:
    """The end of the job as the starter sees it: the report, the final transfer, the exit status."""
    if outcome.kind == START_FAILED:
        return EXIT_HELD if report.start_failure(outcome) else EXIT_REQUEUED
    if outcome.kind == FAILED:
        report.gahp_failure(outcome)
        return EXIT_FAILED
    report.ending(plan, outcome)
    if outcome.kind == STOPPED:
        if plan.job.no_output_vm:
            report.no_output()
        else:
            report.output(plan.output, output_mod.transfer_out(transferred, plan.output, plan.user))
            report.retired_checkpoint(*output_mod.retire_checkpoint(plan.output, plan.resume_dir))
        return EXIT_OK
    if outcome.kind == VACATED and outcome.vm_started is not None:
        report.vacated(plan, outcome)
    return EXIT_MAX_WALL if outcome.reason == "max-wall" else EXIT_INTERRUPTED
