"""Where a job's VM goes: datacenter, datastore, resource pool or host, VM folder, network.

Each is chosen by name; an unset name means "the only one there is", and it is an
error (``Ambiguous``, listing the choices) when there are several, ``NotFound`` when
there is none. Resource pools are labelled "<compute resource>/<pool>/..." because
every standalone host and every cluster has a root pool called "Resources"; either
the plain name or the label selects one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from vmgahp.drivers.vmware.errors import Ambiguous, NotFound
from vmgahp.drivers.vmware.session import Session
from vmgahp.drivers.vmware.transport import Deadline


@dataclass(frozen=True)
class Placement:
    datacenter: Any  # vim.Datacenter
    dc_path: str  # its inventory path: the /folder interface's dcPath
    datastore: Any  # vim.Datastore
    datastore_name: str
    pool: Any  # vim.ResourcePool
    host: Any | None  # vim.HostSystem, when one was asked for
    folder: Any  # vim.Folder for VMs

    def ds_path(self, relative: str) -> str:
        """'[datastore] relative' on this placement's datastore."""
        return f"[{self.datastore_name}] {relative.lstrip('/')}"


@dataclass(frozen=True)
class Network:
    name: str
    obj: Any  # vim.Network or vim.dvs.DistributedVirtualPortgroup
    switch_uuid: str | None = None  # distributed port groups only
    portgroup_key: str | None = None


@dataclass(frozen=True)
class _Candidate:
    names: tuple[str, ...]  # what selects it
    label: str  # how errors show it
    obj: Any


def _choose(kind: str, wanted: str | None, candidates: Sequence[_Candidate], where: str) -> Any:
    labels = sorted(c.label for c in candidates)
    if wanted:
        matches = [c for c in candidates if wanted in c.names]
        if not matches:
            raise NotFound(f"no {kind} named {wanted!r} in {where} (there is: {', '.join(labels) or 'none'})")
        if len(matches) > 1:
            found = sorted(c.label for c in matches)
            raise Ambiguous(f"{len(matches)} {kind}s named {wanted!r} in {where}: {', '.join(found)}", found)
        return matches[0].obj
    if not candidates:
        raise NotFound(f"no {kind} in {where}")
    if len(candidates) > 1:
        raise Ambiguous(f"{where} has {len(candidates)} {kind}s ({', '.join(labels)}): name one", labels)
    return candidates[0].obj


def inventory(session: Session, container: Any, types: Sequence[type], paths: Sequence[str],
              deadline: Deadline, what: str) -> list[tuple[Any, dict[str, Any]]]:  # fmt: skip
    """Objects of ``types`` below ``container`` with their ``paths``, through a container view."""
    from pyVmomi import vim, vmodl

    pcls = vmodl.query.PropertyCollector

    def body() -> list[tuple[Any, dict[str, Any]]]:
        manager = session.content.viewManager
        view = session.invoke(what, deadline, manager.CreateContainerView, container, list(types), True,
                              per_session=True)  # fmt: skip
        try:
            walk = pcls.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            objects = [pcls.ObjectSpec(obj=view, skip=True, selectSet=[walk])]
            props = [pcls.PropertySpec(type=t, pathSet=list(paths)) for t in types]
            return session.retrieve(what, deadline, objects, props, per_session=True)
        finally:
            try:
                session.invoke(what, Deadline(5.0), view.DestroyView, per_session=True)
            except Exception:  # noqa: BLE001 - a leaked view dies with the session
                pass

    return session.with_session_objects(what, deadline, body)


def place(session: Session, deadline: Deadline, *, datacenter: str | None = None, datastore: str | None = None,
          pool: str | None = None, host: str | None = None, folder: str | None = None) -> Placement:  # fmt: skip
    from pyVmomi import vim

    content = session.content
    what = "placement"
    tops = inventory(session, content.rootFolder, [vim.Datacenter, vim.Folder], ["name", "parent"], deadline, what)
    names = {obj._moId: (props.get("name", ""), props.get("parent")) for obj, props in tops}

    def inventory_path(obj: Any) -> str:
        parts = []
        while obj is not None and obj._moId != content.rootFolder._moId and obj._moId in names:
            name, obj = names[obj._moId]
            parts.append(name)
        return "/".join(reversed(parts))

    dcs = [_Candidate((p["name"], inventory_path(o)), inventory_path(o), o) for o, p in tops
           if isinstance(o, vim.Datacenter)]  # fmt: skip
    dc = _choose("datacenter", datacenter, dcs, "the inventory")
    dc_path = inventory_path(dc)
    where = f"datacenter {dc_path!r}"
    dc_props = session.props(dc, ["datastoreFolder", "vmFolder", "hostFolder"], deadline, what)

    # Views, not the datacenter's reference lists: those can name objects already gone
    # (vcsim's ESXi model has a stale datastore in it), which fails a whole retrieval.
    stores = inventory(session, dc_props["datastoreFolder"], [vim.Datastore], ["name"], deadline, what)
    ds = _choose("datastore", datastore, [_Candidate((p["name"],), p["name"], o) for o, p in stores], where)
    ds_name = next(p["name"] for o, p in stores if o._moId == ds._moId)

    compute = inventory(session, dc_props["hostFolder"], [vim.ComputeResource, vim.ResourcePool, vim.HostSystem],
                        ["name", "parent"], deadline, what)  # fmt: skip
    by_id = {o._moId: (p.get("name", ""), p.get("parent"), o) for o, p in compute}

    def pool_label(obj: Any) -> str:
        parts = []
        while obj is not None and obj._moId in by_id:
            name, parent, current = by_id[obj._moId]
            parts.append(name)
            if isinstance(current, vim.ComputeResource):
                break
            obj = parent
        return "/".join(reversed(parts))

    chosen_host = None
    if host:
        hosts = [_Candidate((name,), name, o) for name, _, o in by_id.values() if isinstance(o, vim.HostSystem)]
        chosen_host = _choose("host", host, hosts, where)
    if pool:
        pools = [_Candidate((name, pool_label(o)), pool_label(o), o) for name, _, o in by_id.values()
                 if isinstance(o, vim.ResourcePool)]  # fmt: skip
        chosen_pool = _choose("resource pool", pool, pools, where)
    elif chosen_host is not None:
        owner = by_id[chosen_host._moId][1]
        chosen_pool = session.props(owner, ["resourcePool"], deadline, what)["resourcePool"]
    else:
        pools = [_Candidate((name, pool_label(o)), pool_label(o), o) for name, _, o in by_id.values()
                 if isinstance(o, vim.ResourcePool)]  # fmt: skip
        chosen_pool = _choose("resource pool", None, pools, where + " (and no host was named)")

    vm_folder = dc_props["vmFolder"]
    if folder:
        folders = inventory(session, vm_folder, [vim.Folder], ["name"], deadline, what)
        vm_folder = _choose("VM folder", folder, [_Candidate((p["name"],), p["name"], o) for o, p in folders], where)
    return Placement(datacenter=dc, dc_path=dc_path, datastore=ds, datastore_name=ds_name, pool=chosen_pool,
                     host=chosen_host, folder=vm_folder)  # fmt: skip


def find_network(session: Session, placement: Placement, name: str, deadline: Deadline) -> Network:
    """A standard or distributed port group of the placement's datacenter, by name."""
    from pyVmomi import vim

    what = f"network {name!r}"
    folder = session.props(placement.datacenter, ["networkFolder"], deadline, what)["networkFolder"]
    found = inventory(session, folder, [vim.Network], ["name"], deadline, what)
    obj = _choose("network", name, [_Candidate((p["name"],), p["name"], o) for o, p in found],
                  f"datacenter {placement.dc_path!r}")  # fmt: skip
    if isinstance(obj, vim.dvs.DistributedVirtualPortgroup):
        pg = session.props(obj, ["key", "config.distributedVirtualSwitch"], deadline, what)
        switch = session.props(pg["config.distributedVirtualSwitch"], ["uuid"], deadline, what)
        return Network(name, obj, switch_uuid=switch["uuid"], portgroup_key=pg["key"])
    return Network(name, obj)

