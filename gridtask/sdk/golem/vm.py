"""The payload: which bundle a script runs over, and what it needs (yapapi's ``vm.repo``).

A Golem image is a content-addressed bundle here: a directory packed deterministically
(``gridtask bundle pack DIR`` prints its hash, ``gridtask bundle publish DIR`` uploads it to the
relay), which every node fetches and checks against the hash before it runs a script over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gridtask.exceptions import ValidationError
from gridtask.scripts import MAX_CPU_THREADS, MAX_DISK_MIB, MAX_MEMORY_MIB, check_image

GIB_MIB = 1024


@dataclass(frozen=True)
class VmPayload:
    """A bundle and the sandbox a script over it asks for (memory and disk in MiB)."""

    image_hash: str
    memory_mib: int
    disk_mib: int
    cpu_threads: int


async def repo(
    *,
    image_hash: str,
    min_mem_gib: float = 0.5,
    min_storage_gib: float = 0.25,
    min_cpu_threads: int = 1,
    image_url: str | None = None,
    capabilities: object = None,
) -> VmPayload:
    """The payload for ``execute_tasks``: the bundle ``image_hash`` with at least this much memory
    and disk for each script (a node's sandbox gives each script exactly that, up to 4 GiB), on a
    node with at least ``min_cpu_threads`` CPU threads (one with fewer refuses the script, which
    then goes to another node).

    ``image_url`` and ``capabilities`` are yapapi's; gridtask fetches every bundle from its relay
    by hash and has no VM capabilities to choose from, so they must be left out."""
    if image_url is not None or capabilities is not None:
        raise ValidationError("vm.repo: image_url and capabilities are not supported: nodes fetch the bundle "
                              "from the relay by image_hash (`gridtask bundle publish DIR`)")
    check_image(image_hash)
    memory = _mib("min_mem_gib", min_mem_gib, MAX_MEMORY_MIB)
    disk = _mib("min_storage_gib", min_storage_gib, MAX_DISK_MIB)
    if isinstance(min_cpu_threads, bool) or not isinstance(min_cpu_threads, int) or \
            not 1 <= min_cpu_threads <= MAX_CPU_THREADS:
        raise ValidationError(f"min_cpu_threads: an integer from 1 to {MAX_CPU_THREADS} (got {min_cpu_threads!r})")
    return VmPayload(image_hash, memory, disk, min_cpu_threads)


def _mib(name: str, gib: float, most: int) -> int:
    if isinstance(gib, bool) or not isinstance(gib, int | float) or not gib > 0:
        raise ValidationError(f"{name}: a positive number of GiB (got {gib!r})")
    mib = math.ceil(gib * GIB_MIB)
    if mib > most:
        raise ValidationError(f"{name}: at most {most / GIB_MIB:g} GiB, what a node's sandbox gives one script "
                              f"(got {gib})")
    return mib
