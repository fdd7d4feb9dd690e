"""The job ad's attributes evaluated with HTCondor's ClassAd library.

``evaluate`` parses each ``Name = expression`` line of the CLASSAD block on
its own (old ClassAd syntax; a line that does not parse is dropped, as the C++
gahp drops it) and evaluates every attribute in the ad. It runs in a short-
lived child (``python -m vmgahp.job.ad_values``: JSON lines in on stdin, the
entries out on stdout, see :mod:`vmgahp.job.ad_reader`), so the long-lived
gahp never carries classad2 (~10 MB of private memory per gahp); tests and
the fallback call it in-process.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")

# One attribute: its name as sent, its value (a plain str/int/float/bool, or
# None for UNDEFINED, ERROR and values no getter reads) and its expression
# as HTCondor prints it (sPrintAd, for LIBVIRT_XML_SCRIPT).
Entry = tuple[str, Any, str]


def evaluate(lines: list[str] | tuple[str, ...]) -> tuple[list[Entry], list[str]]:
    """The ad's entries in the order sent, and the lines dropped."""
    import classad2

    ad = classad2.ClassAd()
    dropped = []
    for line in lines:
        if not _insert(classad2, ad, line):
            dropped.append(line)
    entries = []
    for name in ad.keys():
        try:
            value = ad.eval(name)
        except Exception:  # classad2 raises its own exception types
            value = None
        if isinstance(value, classad2.Value):  # UNDEFINED, ERROR (an IntEnum: check first)
            plain = None
        elif isinstance(value, (bool, int, float, str)):
            plain = value
        else:
            plain = None  # UNDEFINED, ERROR, lists, nested ads: no getter takes them
        entries.append((name, plain, str(ad.lookup(name))))
    return entries, dropped


def _insert(classad2: Any, ad: Any, line: str) -> bool:
    name, sep, value = line.lstrip().partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name) or not value.strip():
        return False
    try:
        parsed = classad2.parseOne(f"{name} = {value.strip()}", classad2.ParserType.Old)
    except Exception:  # classad2 raises its own ClassAdException types
        return False
    if name not in parsed:
        return False
    ad[name] = parsed.lookup(name)
    return True


def main() -> int:
    """The child: a JSON list of lines on stdin, one JSON object out."""
    evaluate(['Warm = strcat("a", "b") + 1'])  # classad2 loaded and its parser run while the ad arrives
    lines = json.loads(sys.stdin.buffer.read())
    entries, dropped = evaluate(lines)
    sys.stdout.write(json.dumps({"entries": entries, "dropped": dropped}))
    sys.stdout.flush()
    os.close(1)  # EOF now: the gahp need not wait for this interpreter's teardown
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for whatever prints at exit
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
