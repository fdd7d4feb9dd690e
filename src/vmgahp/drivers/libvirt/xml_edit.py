"""Small, surgical edits of domain XML written by someone else.

Used on the LIBVIRT_XML_SCRIPT output (force the virt type and the VM name)
and on the XML stored in a save image (point its disks at this job's files
when they moved, e.g. a checkpoint restarted in another working directory).

minidom is used rather than ElementTree because it keeps namespace prefixes
(``qemu:commandline``), comments and attribute order as written, so an edit
changes only what it means to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable
from xml.dom import minidom
from xml.parsers.expat import ExpatError

from vmgahp.errors import VmgahpError

if TYPE_CHECKING:  # pydantic loads with the first START, not with the driver
    from vmgahp.job.model import Disk


class DomainXmlParseError(VmgahpError, ValueError):
    """The text is not a well-formed ``<domain>`` document."""


def parse_domain(text: str) -> tuple[minidom.Document, minidom.Element]:
    """The document and its ``<domain>`` root element."""
    try:
        doc = minidom.parseString(text.encode("utf-8"))
    except (ExpatError, ValueError) as exc:
        raise DomainXmlParseError(f"not well-formed XML: {exc}") from exc
    root = doc.documentElement
    if root is None or root.tagName != "domain":
        tag = root.tagName if root is not None else "nothing"
        raise DomainXmlParseError(f"the document is <{tag}>, not <domain>")
    return doc, root


def normalise_script_xml(text: str, name: str, domain_type: str | None) -> tuple[str, list[str]]:
    """Check the script's XML and force its name (and virt type, if given).

    Returns the XML and a list of what was changed, for the log.
    """
    doc, root = parse_domain(text)
    changes: list[str] = []
    if domain_type is not None and root.getAttribute("type") != domain_type:
        changes.append(f"domain type {root.getAttribute('type')!r} -> {domain_type!r}")
        root.setAttribute("type", domain_type)
    if domain_type == "qemu":
        # Software emulation has no host CPU to pass through (HTCondor's stock
        # script always asks for host-passthrough): QEMU picks its default model.
        for cpu in _children(root, "cpu"):
            if cpu.getAttribute("mode") in ("host-passthrough", "host-model"):
                changes.append(f"<cpu mode={cpu.getAttribute('mode')!r}> removed: no hardware virtualization")
                root.removeChild(cpu)
    # The gahp finds its VM by name (STATUS, kill mode); a script must not rename it.
    names = _children(root, "name")
    current = _text(names[0]) if names else None
    if current != name:
        changes.append(f"name {current!r} -> {name!r}")
        for el in names:
            root.removeChild(el)
        el = doc.createElement("name")
        el.appendChild(doc.createTextNode(name))
        root.insertBefore(el, root.firstChild)
    return root.toxml(), changes


def retarget_disks(xml: str, disks: Iterable[Disk]) -> str | None:
    """Point each file disk of ``xml`` at the job's file for the same target
    device; None when nothing has to change. A retargeted disk loses the
    ``<backingStore>`` chain recorded with the old file: libvirt reads the
    new file's own chain from its header."""
    wanted = {d.device: d.path for d in disks}
    _doc, root = parse_domain(xml)
    changed = False
    for disk in root.getElementsByTagName("disk"):
        if disk.getAttribute("type") != "file":
            continue
        # Direct children only: a <backingStore> has <source>s of its own.
        targets = _children(disk, "target")
        sources = _children(disk, "source")
        if not targets or not sources:
            continue
        path = wanted.get(targets[0].getAttribute("dev"))
        if path is not None and sources[0].getAttribute("file") != path:
            sources[0].setAttribute("file", path)
            for chain in _children(disk, "backingStore"):
                disk.removeChild(chain)
            changed = True
    return root.toxml() if changed else None


@dataclass(frozen=True, slots=True)
class AttachedDisk:
    """A disk as the running domain really uses it (read back from libvirt)."""

    device: str
    path: str
    format: str = ""
    readonly: bool = False
    cdrom: bool = False


def file_disks(xml: str) -> list[AttachedDisk]:
    """The file-backed disks of a domain description, as the domain uses them."""
    _doc, root = parse_domain(xml)
    found = []
    for disk in root.getElementsByTagName("disk"):
        targets, sources = _children(disk, "target"), _children(disk, "source")
        if disk.getAttribute("type") != "file" or not targets or not sources or not sources[0].getAttribute("file"):
            continue
        drivers = _children(disk, "driver")
        found.append(AttachedDisk(
            device=targets[0].getAttribute("dev"),
            path=sources[0].getAttribute("file"),
            format=drivers[0].getAttribute("type") if drivers else "",
            readonly=bool(_children(disk, "readonly")),
            cdrom=disk.getAttribute("device") == "cdrom",
        ))
    return found


def _children(el: minidom.Element, tag: str) -> list[minidom.Element]:
    return [node for node in el.childNodes if isinstance(node, minidom.Element) and node.tagName == tag]


def _text(el: minidom.Element) -> str:
    return "".join(node.data for node in el.childNodes if node.nodeType == node.TEXT_NODE).strip()
