"""START, STATUS and CHECKPOINT of a VMware job: through vmgahp, and as raw pyVmomi calls.

    .venv/bin/python bench/vmware_bench.py [--runs N]

Both sides run in the same process run against the same vcsim (built by
scripts/build-vcsim.sh, started here on 127.0.0.1 and stopped by its pid) and
do the same vSphere work:

* START: make a datastore folder, upload the VMX, the base disk (descriptor and
  a 1 MiB extent), the NVRAM and log, RegisterVM_Task, ReconfigVM_Task (memory,
  vCPUs, NIC with a manual MAC on "VM Network", a child disk over the base),
  PowerOnVM_Task;
* STATUS: one RetrievePropertiesEx of power state, quick stats, guest IP and
  devices;
* CHECKPOINT: SuspendVM_Task, SearchDatastore_Task, download of the state files
  (VMX, NVRAM, child disk), UnregisterVM, DeleteDatastoreFile_Task.

vmgahp's figure is the starter's view: from writing the command to reading the
result (its ``R`` and ``RESULTS``) - the daemon's protocol, job-ad checks,
threads and deadlines included. The raw side waits for tasks with pyVmomi's own
``WaitForUpdatesEx`` loop (pyVim's ``WaitForTask``, minus its final read of
``task.info``, which vcsim's TaskInfo breaks). vcsim answers in microseconds where a vCenter takes
tens of milliseconds, so the ratios here are the worst case for vmgahp's
overhead. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests"))

from gahp_process import GahpProcess  # noqa: E402
from vcsim_fixture import _make_cert, start_vcsim  # noqa: E402
from vmgahp.protocol.client import Notification, Results  # noqa: E402

POOL = "DC0_H0/Resources"
FILES = {"job.vmx": b'config.version = "8"\nvirtualHW.version = "13"\n', "base.vmdk": b"# Disk DescriptorFile\n",
         "base-flat.vmdk": b"\0" * (1 << 20), "vmware.log": b""}  # fmt: skip


def vm_name(n: int) -> str:
    return f"bench_example.org_{n}.0"


def write_vm_dir(work: Path, n: int) -> None:
    work.mkdir(mode=0o755)
    for name, data in {**FILES, f"{vm_name(n)}.nvram": b"NVRAM"}.items():
        (work / name).write_bytes(data)
        (work / name).chmod(0o644)


# ------------------------------------------------------------------ through vmgahp
def timed(gahp: GahpProcess, command: str, argument: str) -> tuple[float, str]:
    """Seconds from the command to its result, reading R then one RESULTS."""
    began = time.perf_counter()
    request_id = gahp.submit(command, argument)
    while True:
        event = gahp.next_event(120)
        if isinstance(event, Notification):
            gahp.send("RESULTS")
            while not isinstance(event := gahp.next_event(120), Results):
                pass
            found = gahp.client.take(request_id)
            if found is not None:
                assert found.ok, (command, found.text)
                return time.perf_counter() - began, found.text


def vmgahp_runs(sim, root: Path, password: Path, runs: int) -> dict[str, list[float]]:
    """One gahp, as on an execute node; run 0's START also logs in (the first vSphere call)."""
    times: dict[str, list[float]] = {"START (first: login)": [], "START": [], "STATUS": [], "CHECKPOINT": []}
    work = root / "gahp"
    write_vm_dir(work, 100)
    for n in range(1, runs + 1):
        (work / f"{vm_name(100 + n)}.nvram").write_bytes(b"NVRAM")
    knobs = {"VMGAHP_VMTYPE": "vmware", "VM_NETWORKING": "true", "VM_NETWORKING_TYPE": "nat",
             "VMWARE_VSPHERE_URL": sim.url, "VMWARE_USER": sim.user, "VMWARE_PASSWORD_FILE": str(password),
             "VMWARE_CA_FILE": str(sim.ca_file), "VMWARE_RESOURCE_POOL": POOL,
             "VMWARE_NAT_PORTGROUP": "VM Network", "VM_GAHP_LOG": str(root / "gahp.log")}  # fmt: skip
    gahp = GahpProcess(work, **knobs)
    try:
        gahp.handshake()
        for n in range(runs + 1):
            ad = [f'VM_WORKING_DIR = "{work}"', f"ClusterId = {100 + n}", "ProcId = 0", 'User = "bench@example.org"',
                  'JobVMType = "vmware"', "JobVMMemory = 256", "JobVM_VCPUS = 2", "JobVMCheckpoint = true",
                  "JobVMNetworking = true", 'JobVMNetworkingType = "nat"', 'JobVM_MACADDR = "00:50:56:00:00:07"',
                  "VMPARAM_VMware_Transfer = true", 'VMPARAM_VMware_VMX_File = "job.vmx"',
                  'VMPARAM_VMware_VMDK_Files = "base.vmdk,base-flat.vmdk"']  # fmt: skip
            gahp.send_ad(ad)
            seconds, vm_id = timed(gahp, "CONDOR_VM_START", "vmware")
            times["START (first: login)" if n == 0 else "START"].append(seconds)
            for _ in range(5):
                times["STATUS"].append(timed(gahp, "CONDOR_VM_STATUS", vm_id)[0])
            times["CHECKPOINT"].append(timed(gahp, "CONDOR_VM_CHECKPOINT", vm_id)[0])
            for path in work.glob("*"):  # the next job finds no checkpoint of this one (not timed)
                if path.name.startswith("vmgahp-") or path.name.startswith("xen.mem"):
                    path.unlink()
        gahp.reply("QUIT")
        gahp.wait(30)
    finally:
        gahp.kill()
    return times


# ------------------------------------------------------------------ raw pyVmomi
class Raw:
    def __init__(self, sim) -> None:
        from pyVim.connect import SmartConnect
        from pyVmomi import vim

        self.vim = vim
        self.context = ssl.create_default_context(cafile=str(sim.ca_file))
        self.si = SmartConnect(host=sim.host, port=sim.port, user=sim.user, pwd=sim.password,
                               sslContext=self.context)  # fmt: skip
        self.sim = sim
        content = self.si.RetrieveContent()
        self.content = content
        self.dc = content.rootFolder.childEntity[0]
        self.ds = self.dc.datastore[0]
        view = content.viewManager.CreateContainerView(self.dc, [vim.ResourcePool], True)
        self.pool = next(p for p in view.view if p.parent.name == "DC0_H0")
        view.Destroy()
        self.network = next(n for n in self.dc.network if n.name == "VM Network")
        self.cookie = self.si._stub.cookie.split(";", 1)[0]

    def wait(self, task, result: bool = False):
        """WaitForUpdatesEx on info.state, as pyVim's WaitForTask does (which then reads all of
        task.info - vcsim's TaskInfo of some tasks names an entity pyVmomi refuses to read)."""
        from pyVmomi import vmodl

        pcls = vmodl.query.PropertyCollector
        pc = self.content.propertyCollector
        spec = pcls.FilterSpec(objectSet=[pcls.ObjectSpec(obj=task)],
                               propSet=[pcls.PropertySpec(type=type(task), pathSet=["info.state", "info.error"])])
        watch = pc.CreateFilter(spec, True)
        try:
            version, state, error = "", None, None
            while state not in ("success", "error"):
                update = pc.WaitForUpdatesEx(version, pcls.WaitOptions(maxWaitSeconds=60))
                version = update.version
                for change in (c for fs in update.filterSet for o in fs.objectSet for c in o.changeSet):
                    state = change.val if change.name == "info.state" else state
                    error = change.val if change.name == "info.error" else error
        finally:
            watch.DestroyPropertyFilter()
        assert state == "success", error
        if not result:
            return None
        got = pc.RetrievePropertiesEx([pcls.FilterSpec(objectSet=[pcls.ObjectSpec(obj=task)], propSet=[
            pcls.PropertySpec(type=type(task), pathSet=["info.result"])])], pcls.RetrieveOptions())
        return got.objects[0].propSet[0].val

    def transfer(self, method: str, path: str, body: bytes = b"") -> bytes:
        query = urlencode({"dcPath": self.dc.name, "dsName": self.ds.name})
        conn = http.client.HTTPSConnection(self.sim.host, self.sim.port, context=self.context, timeout=60)
        try:
            conn.request(method, f"/folder/{quote(path)}?{query}", body=body or None,
                         headers={"Cookie": self.cookie, "Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            data = response.read()
            assert response.status in (200, 201), (method, path, response.status)
            return data
        finally:
            conn.close()

    def start(self, folder: str, name: str, local: Path):
        vim = self.vim
        ds = f"[{self.ds.name}]"
        self.content.fileManager.MakeDirectory(f"{ds} {folder}", self.dc, True)
        for path in sorted(local.iterdir()):
            self.transfer("PUT", f"{folder}/{path.name}", path.read_bytes())
        vm = self.wait(self.dc.vmFolder.RegisterVM_Task(f"{ds} {folder}/job.vmx", name, False, self.pool), True)
        nic = vim.vm.device.VirtualE1000e(key=-1, addressType="manual", macAddress="00:50:56:00:00:08")
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network",
                                                                           network=self.network)  # fmt: skip
        scsi = vim.vm.device.VirtualLsiLogicController(key=-2, busNumber=0, sharedBus="noSharing")
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"{ds} {folder}/base-vmgahp.vmdk", diskMode="persistent",
            parent=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=f"{ds} {folder}/base.vmdk",
                                                                 diskMode="persistent"))  # fmt: skip
        disk = vim.vm.device.VirtualDisk(key=-3, controllerKey=-2, unitNumber=0, capacityInKB=0, backing=backing)
        changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=nic),
                   vim.vm.device.VirtualDeviceSpec(operation="add", device=scsi),
                   vim.vm.device.VirtualDeviceSpec(operation="add", device=disk, fileOperation="create")]  # fmt: skip
        self.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=256, numCPUs=2, deviceChange=changes)))
        self.wait(vm.PowerOnVM_Task())
        return vm

    def status(self, vm) -> None:
        from pyVmomi import vmodl

        pcls = vmodl.query.PropertyCollector
        spec = pcls.FilterSpec(objectSet=[pcls.ObjectSpec(obj=vm)], propSet=[pcls.PropertySpec(
            type=type(vm), pathSet=["runtime.powerState", "summary.quickStats", "guest.ipAddress",
                                    "config.hardware.device"])])  # fmt: skip
        self.content.propertyCollector.RetrievePropertiesEx([spec], pcls.RetrieveOptions())

    def checkpoint(self, vm, folder: str, local: Path) -> None:
        ds = f"[{self.ds.name}]"
        self.wait(vm.SuspendVM_Task())
        search = self.vim.host.DatastoreBrowser.SearchSpec(matchPattern=["*"])
        result = self.wait(self.ds.browser.SearchDatastore_Task(f"{ds} {folder}", search), True)
        for entry in result.file:
            if entry.path.endswith((".vmx", ".nvram", ".vmss", ".vmem")) or entry.path.startswith("base-vmgahp"):
                (local / entry.path).write_bytes(self.transfer("GET", f"{folder}/{entry.path}"))
        vm.UnregisterVM()
        self.wait(self.content.fileManager.DeleteDatastoreFile_Task(f"{ds} {folder}", self.dc))


def raw_runs(sim, root: Path, runs: int) -> dict[str, list[float]]:
    raw = Raw(sim)
    times: dict[str, list[float]] = {"START": [], "STATUS": [], "CHECKPOINT": []}
    for n in range(runs):
        local = root / f"r{n}"
        write_vm_dir(local, 200 + n)
        saved = root / f"r{n}-saved"
        saved.mkdir()
        began = time.perf_counter()
        vm = raw.start(f"raw-{n}", vm_name(200 + n), local)
        times["START"].append(time.perf_counter() - began)
        for _ in range(5):
            began = time.perf_counter()
            raw.status(vm)
            times["STATUS"].append(time.perf_counter() - began)
        began = time.perf_counter()
        raw.checkpoint(vm, f"raw-{n}", saved)
        times["CHECKPOINT"].append(time.perf_counter() - began)
    return times


def measure(runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    root = Path(tempfile.mkdtemp(prefix="vmgahp-vmware-bench-"))
    root.chmod(0o755)
    binary = TOP / ".cache" / "vcsim" / "vcsimlite"
    if not binary.exists():
        raise SystemExit(f"no simulator at {binary}: run scripts/setup.sh (or scripts/build-vcsim.sh {binary})")
    sim = start_vcsim(binary, _make_cert(root / "cert"), root / "vcsim")
    try:
        password = root / "password"
        password.write_text(sim.password + "\n")
        password.chmod(0o600)
        (root / "warm").mkdir()
        raw_runs(sim, root / "warm", 1)  # imports and the first TLS handshake, on neither side's clock
        ours = vmgahp_runs(sim, root, password, runs)
        theirs = raw_runs(sim, root, runs)
    finally:
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
    return ours, theirs


OPERATIONS = ("START (first: login)", "START", "STATUS", "CHECKPOINT")


def report_rows(runs: int) -> list:
    from common import Row

    ours, theirs = measure(runs)
    rows = []
    for op in OPERATIONS:
        a, b = statistics.median(ours[op]), statistics.median(theirs[op.split(" ")[0]])
        rows.append(Row(f"VMware {op}", a * 1e3, "ms", b * 1e3, "raw pyVmomi, same calls",
                        note="vcsim on 127.0.0.1" if op == "START" else ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ours, theirs = measure(args.runs)
    print(f"vmware bench: {args.runs} runs against vcsim, medians (STATUS: {5 * args.runs} samples)")
    print(f"{'operation':<22}{'vmgahp':>12}{'raw pyVmomi':>14}{'ratio':>8}")
    for op in OPERATIONS:
        a, b = statistics.median(ours[op]), statistics.median(theirs[op.split(" ")[0]])
        print(f"{op:<22}{a * 1000:>10.1f}ms{b * 1000:>12.1f}ms{a / b:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
