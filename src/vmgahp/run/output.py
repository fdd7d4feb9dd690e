"""What the starter's file transfer sends back, and what becomes of an older checkpoint.

* :func:`transfer_out`: when the VM powered itself off, every new or changed
  file at the top of the scratch directory (the disks, or their overlays)
  goes to the output directory - as the starter's final transfer sends them
  to the shadow - and belongs to the job user there.
* :func:`save_checkpoint`: at a vacate of a checkpointing job, the same files
  go to ``OUTPUT/checkpoint``, which replaces an older one only once complete.
* :func:`retire_checkpoint`: after a run to completion, the checkpoint it
  resumed from is used up (removed); another one in the output directory is
  stale (kept, and said so).

The files a resume brought are always sent back, changed or not: the shadow
keeps a job's checkpoint whole in its spool, so the next run gets them again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vmgahp.job.access import JobUser
from vmgahp.job.workdir import give_to, give_tree_to
from vmgahp.run.scratch import FileState, changed_files, copy_file

CHECKPOINT = "checkpoint"  # OUTPUT/checkpoint
REMOVED, STALE = "removed", "stale"


@dataclass(frozen=True)
class TransferredIn:
    """The scratch directory as the transfer in left it."""

    scratch: Path
    state: dict[str, FileState]  # size and mtime of each file right after the transfer in
    resumed: tuple[str, ...] = ()  # names of the checkpoint files a --resume brought

    def output_names(self) -> list[str]:
        """What the starter would send back now: new or changed files, and the resumed ones."""
        return changed_files(self.scratch, self.state, keep=self.resumed)


def transfer_out(transferred: TransferredIn, output: Path, user: JobUser) -> list[Path]:
    """Copy the job's output into ``output``; returns the files copied."""
    created = not output.exists()
    copied = copy_out(transferred.scratch, transferred.output_names(), output)
    _give_to_user(copied + ([output] if created else []), user)
    return copied


def save_checkpoint(transferred: TransferredIn, output: Path, user: JobUser) -> Path:
    """What the starter uploads at a vacate, into ``output``/checkpoint; returns that directory."""
    names = transferred.output_names()
    final = output / CHECKPOINT
    staging = output / f".checkpoint.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    created = not output.exists()
    copy_out(transferred.scratch, names, staging)
    _give_to_user([staging] + ([output] if created else []), user)
    replace_dir(staging, final)
    return final


def retire_checkpoint(output: Path, resume_dir: Path | None) -> tuple[str, Path]:
    """After the VM stopped by itself: (REMOVED, path) when the run resumed from
    ``output``/checkpoint (now used up), (STALE, path) when an older one is
    there, else ("", path)."""
    stale = output / CHECKPOINT
    if resume_dir is not None and resume_dir == stale:
        shutil.rmtree(stale, ignore_errors=True)
        return REMOVED, stale
    if stale.is_dir():
        return STALE, stale
    return "", stale


def copy_out(scratch: Path, names: Iterable[str], destination: Path) -> list[Path]:
    """Copy ``names`` from the scratch directory into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        target = destination / name
        copy_file(scratch / name, target)
        copied.append(target)
    return copied


def replace_dir(staging: Path, final: Path) -> None:
    """Put ``staging`` at ``final``, replacing an older one only once the new one is complete."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    if old.exists():
        shutil.rmtree(old)


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
