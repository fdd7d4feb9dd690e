"""The three names of every file on vmgahp's CD-ROM image, unique per directory.

* Rock Ridge 1.09: the exact host name (what Linux guests use); a name that
  is not UTF-8 on the host keeps U+FFFD in its place;
* Joliet level 3: long Unicode names of at most 64 UTF-8 bytes (pycdlib's
  limit), without the characters Joliet and Windows refuse;
* ISO 9660 level 3 identifiers in 8.3 form (A-Z, 0-9, ``_``).

Clashes get ``~n`` (Rock Ridge, Joliet) or ``_n`` (ISO 9660) suffixes. The
nodes are the CD-ROM builder's (``name``, ``kind``, ``children`` in, the
three names out).
"""

from __future__ import annotations

import os
import unicodedata
from itertools import count
from typing import Any, Callable

JOLIET_MAX_BYTES = 64  # pycdlib's limit, in UTF-8 bytes (the standard says 64 UCS-2 units)
_JOLIET_BAD = set('*/:;?\\"<>|')  # characters Joliet (and Windows) refuse


def assign_names(nodes: list[Any], iso_parent: str, joliet_parent: str) -> None:
    """Give each node its three names, unique within its directory."""
    iso_used: set[str] = {"RR_MOVED"} if not iso_parent else set()  # pycdlib's relocation dir
    joliet_used: set[str] = set()
    rr_used: set[str] = set()
    for node in nodes:
        node.rr_name = _unique(rr_name(node.name), rr_used, _tilde, key=str)
        joliet = _unique(_joliet_name(node.name), joliet_used, _joliet_variant, key=str.casefold)
        ident = _unique(_iso_ident(node.name, node.kind == "dir"), iso_used, _iso_variant, key=str)
        node.joliet_path = f"{joliet_parent}/{joliet}"
        node.iso_path = f"{iso_parent}/{ident}"
        if node.kind == "dir":
            assign_names(node.children, node.iso_path, node.joliet_path)


def _unique(name: str, used: set[str], variant: Callable[[str, int], str], key: Callable[[str], str]) -> str:
    candidate = name
    for n in count(1):
        if key(candidate) not in used:
            break
        candidate = variant(name, n)
    used.add(key(candidate))
    return candidate


def rr_name(name: str) -> str:
    # A name that is not UTF-8 on the host is stored with U+FFFD in its place.
    return os.fsencode(name).decode("utf-8", "replace")


def _tilde(name: str, n: int) -> str:
    return f"{name}~{n}"


def _d_chars(text: str) -> str:
    """Upper-case ISO 9660 d-characters: accents dropped, the rest ``_``."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch):
            continue
        out.append(ch.upper() if ch.isascii() and ch.isalnum() else "_")
    return "".join(out)


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # "README" or ".bashrc"
        return name, ""
    return stem, ext


def _iso_ident(name: str, is_dir: bool) -> str:
    """An 8.3 identifier (``NAME.EXT`` for files, ``NAME`` for directories)."""
    if is_dir:
        return _d_chars(name)[:8] or "_"
    stem, ext = _split_ext(name)
    return f"{_d_chars(stem)[:8] or '_'}.{_d_chars(ext)[:3]}"


def _iso_variant(ident: str, n: int) -> str:
    stem, dot, ext = ident.partition(".")
    suffix = f"_{n}"
    return f"{stem[: 8 - len(suffix)]}{suffix}{dot}{ext}"


def _joliet_name(name: str) -> str:
    name = rr_name(name)
    name = "".join("_" if ch in _JOLIET_BAD or ord(ch) < 0x20 else ch for ch in name)
    return _fit_joliet(name, "")


def _joliet_variant(name: str, n: int) -> str:
    return _fit_joliet(name, f"~{n}")


def _fit_joliet(name: str, suffix: str) -> str:
    """``name`` with ``suffix`` before its extension, within 64 UTF-8 bytes."""
    stem, ext = _split_ext(name)
    ext = f".{ext}" if ext else ""
    if len(ext.encode()) > 16:  # not a real extension: truncate the whole name
        stem, ext = name, ""
    room = JOLIET_MAX_BYTES - len(ext.encode()) - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", "ignore")  # never split a character
    return f"{stem}{suffix}{ext}"
