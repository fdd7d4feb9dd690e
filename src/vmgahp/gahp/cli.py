"""Entry point: ``vmgahp -f [-t] -M 0|3|4 ...`` and ``vmgahp run JOB.sub``.

Exit codes are the C++ gahp's: 1 for every start-up failure (with nothing on
stdout), 0 for a normal end. Only modules needed before the banner are
imported at start-up; the hypervisor and ClassAd libraries load later.
"""

from __future__ import annotations

import os
import sys

from vmgahp import __version__, log
from vmgahp.gahp.argv import KILL, STANDALONE, TEST, USAGE, Invocation, UsageError, parse_argv

TYPE_CHECKING = False  # not typing's: this module is on the banner path
if TYPE_CHECKING:
    from vmgahp.job.access import JobUser
    from vmgahp.protocol.session import Request
    from vmgahp.vm.runtime import Runtime

# One version on the wire: the VM GAHP protocol vmgahp speaks, in the banner,
# the VERSION reply and the probe's VM_GAHP_VERSION alike (the startd
# publishes the latter). vmgahp's own release is the banner's name field.
PROTOCOL_VERSION = "0.0.1"
BANNER = f"$VMGahpVersion {PROTOCOL_VERSION} Dec 1 2026 vmgahp-{__version__} $"
PROBE_DEADLINE = 3.5  # the startd waits 5 s for the probe
SERVER_CHECK_DEADLINE = 30.0
KILL_DEADLINE = 30.0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "run":
        from vmgahp.run.cli import run_main

        return run_main(args[1:])
    code = _gahp_main(args)
    sys.stdout.flush()
    return code


def _gahp_main(args: list[str]) -> int:
    from vmgahp.job.access import job_user_from_env

    user = job_user_from_env(os.environ)
    if os.geteuid() == 0 and user is None:
        # The C++ gahp refuses to run as root without knowing the job user.
        log.early_error("Please set environment variable 'VMGAHP_USER_UID=<uid>'")
        return 1
    try:
        invocation = parse_argv(args)
    except UsageError as exc:
        log.early_error(f"{exc}\n{USAGE}")
        return 1
    log.setup(terminal=invocation.terminal_log)
    from vmgahp.gahp.startup import StartupError

    try:
        if invocation.mode == TEST:
            return _probe(invocation)
        if invocation.mode == KILL:
            return _kill(invocation)
        assert invocation.mode == STANDALONE
        return _serve(invocation, user)
    except StartupError as exc:
        log.get().error("startup_failed", detail=str(exc))
        return 1


def _check_vm_type(vm_type: str) -> None:
    from vmgahp.drivers.registry import available_types, known_types
    from vmgahp.gahp.startup import StartupError

    if vm_type not in known_types():
        raise StartupError(f"VM type {vm_type!r} is not supported (supported: {', '.join(known_types())})")
    if vm_type not in available_types():
        raise StartupError(f"the {vm_type} backend's library is not installed")


def _apply_log_settings(invocation: Invocation, settings: object) -> None:
    log.setup(
        path=getattr(settings, "log_path", ""),
        debug=getattr(settings, "log_debug", False),
        terminal=invocation.terminal_log,
        options=getattr(settings, "log_options", None),
    )
    for warning in getattr(settings, "warnings", ()):
        log.get().warning("config_value_ignored", detail=warning)


def _probe(invocation: Invocation) -> int:
    from vmgahp.gahp.startup import PendingPreflight

    _check_vm_type(invocation.vm_type)
    pending = PendingPreflight(invocation.vm_type, PROBE_DEADLINE, invocation.terminal_log)
    settings = pending.settings()
    _apply_log_settings(invocation, settings)
    types = pending.network_types or []  # what the driver found this host provides
    lines = [
        f'VM_GAHP_VERSION = "{PROTOCOL_VERSION}"',
        f'VM_Type = "{invocation.vm_type}"',
        f"VM_Memory = {settings.vm_memory}",
        f"VM_Networking = {'TRUE' if types else 'FALSE'}",
    ]
    if types:
        # Only what a job can really get here (the C++ prints the raw list, Q9).
        lines.append(f'VM_Networking_Types = "{",".join(types)}"')
    if settings.hardware_vt:
        lines.append("VM_HardwareVT = TRUE")
    os.write(1, ("\n".join(lines) + "\n").encode())
    return 0


def _kill(invocation: Invocation) -> int:
    from vmgahp.drivers.registry import load_hypervisor
    from vmgahp.gahp.startup import PendingPreflight, StartupError
    from vmgahp.vm.deadline import call_with_deadline

    _check_vm_type(invocation.vm_type)
    # The host check runs in every mode, before the mode's action (spec 1.7).
    settings = PendingPreflight(invocation.vm_type, SERVER_CHECK_DEADLINE, invocation.terminal_log).settings()
    _apply_log_settings(invocation, settings)
    hypervisor = load_hypervisor(invocation.vm_type, settings)
    try:
        destroyed = call_with_deadline(lambda: hypervisor.destroy_by_name(invocation.match), KILL_DEADLINE)
    except Exception as exc:
        raise StartupError(f"kill of {invocation.match!r} failed: {exc}") from exc
    log.get().info("kill_mode", name=invocation.match, destroyed=destroyed)
    return 0


def _serve(invocation: Invocation, user: JobUser | None) -> int:
    from vmgahp.gahp.startup import PendingPreflight, StartupError
    from vmgahp.protocol.env import read_gahp_environment

    env = read_gahp_environment(os.environ)
    vm_type, working_dir = env.vm_type, env.working_dir
    if not vm_type:
        raise StartupError("cannot find vmtype (VMGAHP_VMTYPE is not set)")
    if not working_dir:
        raise StartupError("VMGAHP_WORKING_DIR is not set")
    try:
        os.chdir(working_dir)
    except OSError as exc:
        raise StartupError(f"cannot chdir to {working_dir}: {exc}") from exc
    pending = PendingPreflight(vm_type, SERVER_CHECK_DEADLINE, invocation.terminal_log)
    # Check the type and import the daemon while the child reads the configuration.
    _check_vm_type(vm_type)
    from vmgahp.drivers.registry import available_types, load_hypervisor
    from vmgahp.gahp import config  # noqa: F401 - pending.settings() needs it; load it now
    from vmgahp.gahp.daemon import Daemon, warm_up
    from vmgahp.protocol.session import GahpSession

    settings = pending.settings()
    _apply_log_settings(invocation, settings)

    session = GahpSession(available_types(), BANNER)
    daemon = Daemon(session, hold_limit=settings.call_timeout + 5.0)  # every result is in by then
    daemon.write_banner(BANNER)
    # The request machinery is not needed for the banner; the starter's first
    # command waits in the pipe meanwhile.
    from vmgahp.vm.runtime import Runtime

    # The backend itself is imported and connected at the first START.
    daemon.runtime = _JobLogging(Runtime(settings, vm_type, user, daemon.report, load_hypervisor))
    warm_up(log.get)
    log.get().info("started", vm_type=vm_type, working_dir=working_dir, version=__version__)
    try:
        code = daemon.serve()  # destroys this gahp's VMs however it ends
    except BaseException:  # a bug outside the per-line guard: the VMs are gone already
        log.get().exception("daemon_crashed", detail="the command loop raised; every VM was destroyed")
        code = 1
    log.get().info("exit", code=code)
    # Worker threads may still sit in a hung hypervisor call: do not wait.
    os._exit(code)


class _JobLogging:
    """The runtime, but the job's id goes on every later log line of this
    process as soon as a START brings the job ad (one gahp serves one job)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def prepare_for_start(self) -> None:
        self._runtime.prepare_for_start()

    def close(self) -> None:
        self._runtime.close()

    def submit(self, request: Request) -> None:
        ad_lines = getattr(request, "ad_lines", None)
        if ad_lines:
            job_id = log.job_id_from_ad(ad_lines)
            if job_id:
                log.bind_job(job_id)
        self._runtime.submit(request)

    def __getattr__(self, name: str) -> object:
        return getattr(self._runtime, name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
