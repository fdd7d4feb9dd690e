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
   there (its files are transferred in and listed in TransferIntermediate,
   as the shadow does). A second Ctrl-C kills the VM at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vmgahp.job.access import JobUser, can_enter
from vmgahp.job.workdir import give_to, give_tree_to
from vmgahp.protocol.env import gahp_environment
from vmgahp.run import defaults as defaults_mod
from vmgahp.run import scratch as scratch_mod
from vmgahp.run.progress import Progress, hms, size
from vmgahp.run.starter import FAILED, KILLED, START_FAILED, STOPPED, VACATED, Interrupts, Outcome, Starter, StarterSettings, explain_start_failure
from vmgahp.run.submit import Identity, Job, SubmitError, build, full_hostname, load

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


def _err(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"vmgahp run: {text}\n")
    sys.stderr.flush()


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


def run_main(args: list[str]) -> int:
    parser = build_parser()
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:  # argparse: --help is 0, a usage error 2
        return int(exc.code or 0)
    try:
        plan = _plan(options)
    except SubmitError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except _UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    for hint in plan.job.hints:  # what a pool would do differently: loud, and before anything runs
        sys.stdout.flush()
        sys.stderr.write(f"{hint}\n")
    for warning in plan.job.warnings:
        _err(f"warning: {warning}")
    sys.stderr.flush()
    return _run(plan, options)


class _UsageError(Exception):
    pass


def _plan(options: argparse.Namespace) -> Plan:
    submit_path = Path(options.submit_file)
    description = load(submit_path)
    chosen = scratch_mod.choose_job_user(submit_path.resolve().parent)
    resume_dir = Path(options.resume).resolve() if options.resume else None
    resume_files: list[Path] = []
    if resume_dir is not None:
        if not resume_dir.is_dir():
            raise _UsageError(f"--resume {options.resume}: not a directory")
        resume_files = sorted(p for p in resume_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        if not resume_files:
            raise _UsageError(f"--resume {options.resume}: the directory holds no checkpoint files")
    job = build(
        description,
        Identity(chosen.user.login, full_hostname()),
        cluster_id=options.cluster_id,
        transfer_intermediate=tuple(p.name for p in resume_files),
        default_request_cpus=_configured("JOB_DEFAULT_REQUESTCPUS", "1"),
    )
    clash = {item.name for item in job.inputs} & set(scratch_mod.OWN_FILES)
    if clash:
        raise _UsageError(f"an input file is named {clash.pop()}, which vmgahp run uses itself")
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
        raise _UsageError(f"cannot work out defaults for this host: {exc}") from exc
    return Plan(submit_path, job, chosen.user, chosen.why, output, given, resume_dir, resume_files, options.max_wall,
                host_defaults)


def _configured(knob: str, default: str) -> str:
    """A knob from HTCondor's configuration, or ``default`` without one."""
    try:
        import htcondor2

        return str(htcondor2.param.get(knob, default))
    except Exception:  # noqa: BLE001 - no usable configuration
        return default


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
        _CONDOR_JOB_IWD=str(job.iwd),
        BATCH_SYSTEM="HTCondor",
    )
    env.update(gahp_environment(job.vm_type, str(scratch), user.uid, user.gid))
    return env


def _run(plan: Plan, options: argparse.Namespace) -> int:
    job, out = plan.job, sys.stdout
    tty = out.isatty()
    progress = Progress(job.executable, out, tty)
    _header(plan)
    interrupts = Interrupts()
    scratch: Path | None = None
    keep = options.keep_scratch
    try:
        try:
            scratch = scratch_mod.make_scratch(Path(options.scratch_root).resolve() if options.scratch_root else None)
            if os.geteuid() == 0 and not can_enter(str(scratch), plan.user):  # root hands it to the job user
                _err(f"the job user {plan.user.login} (uid {plan.user.uid}) cannot reach {scratch}: a directory "
                     "above it is private; choose another place with --scratch-root (or TMPDIR)")
                return EXIT_FAILED
            names = scratch_mod.transfer_in(scratch, job.inputs, plan.resume_files)
            give_tree_to(scratch, plan.user.uid, plan.user.gid)
        except OSError as exc:
            _err(f"cannot prepare the scratch directory: {exc}")
            keep = True
            return EXIT_FAILED
        interrupts.install()  # from here on Ctrl-C vacates (before, it just stops the copying)
        transferred = scratch_mod.snapshot(scratch)
        input_bytes = sum(state[0] for state in transferred.values())
        progress.say(f"  scratch      {scratch} ({len(names)} input file{'s' if len(names) != 1 else ''}, "
                     f"{size(input_bytes)})")
        resumed = [p.name for p in plan.resume_files]

        def save_checkpoint() -> Path:
            assert scratch is not None
            return _save_checkpoint(plan, scratch, transferred, resumed)

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
            on_checkpoint=save_checkpoint,
            trace=sys.stderr if options.verbose else None,
            server=os.path.abspath(options.gahp) if options.gahp else None,
        )
        outcome = starter.run()
        progress.clear()
        if outcome.kind in (START_FAILED, FAILED):
            keep = True
        try:
            code = _finish(plan, outcome, scratch, transferred, resumed)
        except OSError as exc:
            _err(f"cannot copy the job's output to {plan.output}: {exc}")
            keep = True
            code = EXIT_FAILED
        if keep:
            where = f"scratch kept {scratch} (gahp log: {scratch / scratch_mod.GAHP_LOG})"
            if code == EXIT_FAILED or outcome.kind == START_FAILED:
                _err(f"  {where}")
            else:
                print(f"  {where}")
        return code
    except KeyboardInterrupt:  # only before the handlers were installed
        _err("interrupted")
        return EXIT_INTERRUPTED
    finally:
        interrupts.restore()
        if scratch is not None and not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        sys.stdout.flush()


def _header(plan: Plan) -> None:
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
        print(f"  resuming     from {plan.resume_dir} (TransferIntermediate: {names})")
    sys.stdout.flush()


def _save_checkpoint(plan: Plan, scratch: Path, transferred: dict[str, scratch_mod.FileState],
                     resumed: list[str]) -> Path:
    """What the starter uploads at a vacate: every new or changed file (plus the ones a resume brought)."""
    names = scratch_mod.changed_files(scratch, transferred, keep=resumed)
    final = plan.output / "checkpoint"
    staging = plan.output / f".checkpoint.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    created = not plan.output.exists()
    scratch_mod.copy_out(scratch, names, staging)
    _give_to_user([staging] + ([plan.output] if created else []), plan.user)
    scratch_mod.replace_dir(staging, final)
    return final


def _give_to_user(paths: list[Path], user: JobUser) -> None:
    """Output belongs to the job's owner, as the shadow writes it (best effort)."""
    for path in paths:
        try:
            if path.is_dir():
                give_tree_to(path, user.uid, user.gid)
            else:
                give_to(path, user.uid, user.gid)
        except OSError:
            pass


def _list_files(paths: list[Path]) -> None:
    width = max((len(p.name) for p in paths), default=0)
    for path in paths:
        apparent, allocated = scratch_mod.disk_usage(path)
        sparse = f" ({size(allocated)} on disk)" if allocated < apparent * 0.9 and apparent > 1 << 20 else ""
        print(f"    {path.name.ljust(width)}  {size(apparent)}{sparse}")


def _cpu(outcome: Outcome) -> str:
    status = outcome.last_status
    if status is None or status.cpu_time is None:
        return "unknown (no Running status was seen)"
    return f"{status.cpu_time:.1f} s"


def _finish(plan: Plan, outcome: Outcome, scratch: Path, transferred: dict[str, scratch_mod.FileState],
            resumed: list[str]) -> int:
    job = plan.job
    if outcome.kind == START_FAILED:
        token = outcome.token or "VMGAHP_ERR_INTERNAL"
        held, meaning = explain_start_failure(token)
        _err(f"the VM did not start: {token}")
        _err(f"  {meaning}")
        for detail in outcome.details:
            _err(f"  gahp log: {detail}")
        return EXIT_HELD if held else EXIT_REQUEUED
    if outcome.kind == FAILED:
        _err(f"the gahp failed: {outcome.reason}")
        for detail in outcome.details:
            _err(f"  {detail}")
        return EXIT_FAILED

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

    if outcome.kind == STOPPED:
        if job.no_output_vm:
            print("  output       none (vm_no_output_vm = true)")
        else:
            names = scratch_mod.changed_files(scratch, transferred, keep=resumed)
            created = not plan.output.exists()
            copied = scratch_mod.copy_out(scratch, names, plan.output)
            _give_to_user(copied + ([plan.output] if created else []), plan.user)
            print(f"  output       {plan.output}/" + ("" if copied else " (no new or changed files)"))
            _list_files(copied)
            stale = plan.output / "checkpoint"
            if plan.resume_dir is not None and plan.resume_dir == stale:
                shutil.rmtree(stale, ignore_errors=True)
                print(f"  (removed the used checkpoint {stale})")
            elif stale.is_dir():
                print(f"  note         {stale} is an older checkpoint of this job, now stale")
        return EXIT_OK

    if outcome.kind == VACATED and outcome.vm_started is not None:
        if outcome.checkpoint_dir is not None:
            files = sorted(p for p in outcome.checkpoint_dir.iterdir() if p.is_file())
            print(f"  checkpoint   {outcome.checkpoint_dir}/")
            _list_files(files)
            command = ["vmgahp", "run", str(plan.submit_path), "--resume", str(outcome.checkpoint_dir)]
            if plan.output_given:
                command += ["--output", str(plan.output)]
            print(f"  resume with  {shlex.join(command)}")
        elif job.checkpoint:
            print(f"  checkpoint   FAILED: {outcome.checkpoint_error}")
            for detail in outcome.details:
                print(f"    gahp log: {detail}")
        else:
            print("  checkpoint   none: the job does not set vm_checkpoint = true, so a rerun starts over")
    return EXIT_MAX_WALL if outcome.reason == "max-wall" else EXIT_INTERRUPTED
