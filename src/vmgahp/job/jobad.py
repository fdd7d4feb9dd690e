"""The job ClassAd as the starter sends it, evaluated with HTCondor's library.

Each ``Name = expression`` line of the CLASSAD block is parsed on its own with
``classad2`` (old ClassAd syntax); a line that does not parse is dropped and
logged, as the C++ gahp does. The parsing and evaluation are
:mod:`vmgahp.job.ad_values`'s - in a child process for the gahp
(:mod:`vmgahp.job.ad_reader`), in-process for ``JobAd(lines)``. Lookups follow
HTCondor semantics: names are case-insensitive, integers accept reals
(truncated) and booleans accept numbers.
"""

from __future__ import annotations

from typing import Any

from vmgahp.job.ad_values import Entry


class JobAd:
    """A read-only view of the job ad with typed, HTCondor-style getters."""

    def __init__(self, lines: tuple[str, ...] | list[str] | None = None) -> None:
        from vmgahp.job.ad_values import evaluate

        entries, self.dropped = evaluate(lines or ())
        self._entries: dict[str, Entry] = {name.lower(): (name, value, text) for name, value, text in entries}

    @classmethod
    def from_entries(cls, entries: list[Entry], dropped: list[str]) -> "JobAd":
        ad = cls.__new__(cls)  # not __init__: that evaluates with classad2 here
        ad._entries = {name.lower(): (name, value, text) for name, value, text in entries}
        ad.dropped = list(dropped)
        return ad

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def _value(self, name: str) -> Any:
        entry = self._entries.get(name.lower())
        return None if entry is None else entry[1]

    def get_str(self, name: str) -> str | None:
        value = self._value(name)
        return value if isinstance(value, str) else None

    def get_int(self, name: str) -> int | None:
        value = self._value(name)
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
        return None

    def get_bool(self, name: str) -> bool | None:
        value = self._value(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        return None

    def set_str(self, name: str, value: str) -> None:
        # Printed as ClassAd prints a string literal (sPrintAd, for the XML script).
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        self._entries[name.lower()] = (name, value, text)

    def print_sorted(self, exclude_private: bool = True) -> str:
        """``Name = value`` lines sorted by name, as sPrintAd feeds the XML script."""
        lines = []
        for name, _, text in sorted(self._entries.values(), key=lambda entry: entry[0].lower()):
            if exclude_private and _is_private(name):
                continue
            lines.append(f"{name} = {text}")
        return "\n".join(lines) + "\n"


_PRIVATE = {"capability", "claimid", "claimidlist", "childclaimids", "publicclaimid"}


def _is_private(name: str) -> bool:
    lowered = name.lower()
    return lowered in _PRIVATE or lowered.startswith("_condor_priv")
