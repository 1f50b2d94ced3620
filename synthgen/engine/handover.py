"""Tiles handed to writer processes through shared memory rather than through the executor's pipe.

A ``ProcessPoolExecutor`` pickles every argument and result through a pipe of 64 KB: a 512 px tile with float rgb is
4.3 MB in and 1.3 MB of GeoTIFFs back. In ``make bench`` (``writers_1_pipe``) that cost the generating process 6.2
ms of CPU a tile (3.5 with slots) and held a writer process to 82.4 tiles per CPU second (122.9 with slots). Here the
generating process copies a tile's arrays into a slot (one of a ring of anonymous shared-memory files,
``memfd_create``) and sends only where they lie; the writer maps the slot, reads the arrays in place, and lays the
encoded members in the slot's second half on the way back.

A writer opens a slot through ``/proc/<pid>/fd/<fd>`` of the generating process, so no name exists in any file
system: the memory goes with the processes, even when a job is killed. Where that is not possible (no
``memfd_create``, no ``/proc``, not enough memory, a tile larger than its slot) tiles go through the pipe as before;
the bytes written are the same either way.
"""

from __future__ import annotations

import mmap
import os
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from synthgen.errors import WriterDiedError
from synthgen.io.shards import EncodedTile

ALIGN = 64  # every array and member starts on a cache line
IN_PLACE_MIN_BYTES = 1 << 16  # smaller arrays go with the pickled sample
OUT_HEADROOM = 1 << 16  # beyond the raw rasters' size, for TIFF headers, JSON and incompressible blocks


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class SlotRef:
    """Where a writer finds a slot: the generating process, its file descriptor, the size, and a serial number that
    tells slots apart when a descriptor number is reused."""

    pid: int
    fd: int
    size: int
    serial: int


@dataclass(frozen=True)
class SharedArray:
    """An array laid in a slot, in place of the array in the pickled sample."""

    offset: int
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class SharedBytes:
    """A member's bytes laid in a slot, in place of the bytes in the pickled result."""

    offset: int
    size: int


@dataclass
class _Slot:
    ref: SlotRef
    memory: mmap.mmap
    in_bytes: int  # the first ``in_bytes`` hold the tile's arrays, the rest the encoded members


_mapped: dict[tuple[int, int, int], mmap.mmap] = {}  # in a writer process: the slots it has opened


def _open_slot(ref: SlotRef) -> mmap.mmap:
    """The writer's mapping of a slot, opened on first use."""
    key = (ref.pid, ref.fd, ref.serial)
    if key not in _mapped:
        fd = os.open(f"/proc/{ref.pid}/fd/{ref.fd}", os.O_RDWR)
        try:
            _mapped[key] = mmap.mmap(fd, ref.size)
        finally:
            os.close(fd)
    return _mapped[key]


def probe_slot(ref: SlotRef) -> bytes:
    """Run in a writer: the first bytes of a slot, to check that writers can open slots at all."""
    return bytes(_open_slot(ref)[:8])


def encode_in_slot(fn, sample: dict, ref: SlotRef, in_bytes: int, *args) -> EncodedTile:
    """Run in a writer: ``fn(sample, *args)`` (an ``EncodedTile``) on a sample whose large arrays lie in slot
    ``ref``; the result's members are laid in the slot after ``in_bytes`` where they fit."""
    memory = _open_slot(ref)
    sample = {
        k: np.ndarray(v.shape, np.dtype(v.dtype), memory, v.offset) if isinstance(v, SharedArray) else v
        for k, v in sample.items()
    }
    tile = fn(sample, *args)
    del sample  # the views into the slot
    at, members = in_bytes, []
    for name, data in tile.members:
        if at + len(data) > ref.size:
            members.append((name, data))  # does not fit: through the pipe
            continue
        memory[at : at + len(data)] = data
        members.append((name, SharedBytes(at, len(data))))
        at = _aligned(at + len(data))
    return EncodedTile(tile.key, members, tile.row)


@dataclass
class SharedSlots:
    """The generating process's ring of slots: ``count`` at most, each made at its first use, as large as that
    tile's arrays twice over (arrays in, encoded members out). Made by ``open_shared_slots``."""

    count: int
    slots: list[_Slot] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    serial: int = 0

    def pack(self, sample: dict) -> tuple[dict, int, SlotRef, int] | None:
        """Copy the sample's large arrays into a free slot: (the sample as sent, slot index, its ref, where the
        arrays end), or None when no slot is free and none can be made or the tile does not fit."""
        arrays = {k: v for k, v in sample.items() if isinstance(v, np.ndarray) and v.nbytes >= IN_PLACE_MIN_BYTES}
        need = sum(_aligned(a.nbytes) for a in arrays.values())
        index = next((i for i in self.free if self.slots[i].in_bytes >= need), None)
        if index is None:
            if len(self.slots) >= self.count:
                return None
            slot = _make_slot(self.serial, need, 2 * need + OUT_HEADROOM)
            if slot is None:
                return None
            self.serial += 1
            self.slots.append(slot)
            self.free.append(len(self.slots) - 1)
            index = len(self.slots) - 1
        self.free.remove(index)
        slot, at, sent = self.slots[index], 0, dict(sample)
        for key, array in arrays.items():
            np.ndarray(array.shape, array.dtype, slot.memory, at)[...] = array
            sent[key] = SharedArray(at, array.shape, array.dtype.str)
            at += _aligned(array.nbytes)
        return sent, index, slot.ref, slot.in_bytes

    def unpack(self, index: int, tile: EncodedTile) -> EncodedTile:
        """The tile with its members copied out of slot ``index``, which is free again."""
        memory = self.slots[index].memory
        members = [
            (name, memory[data.offset : data.offset + data.size] if isinstance(data, SharedBytes) else data)
            for name, data in tile.members
        ]
        self.release(index)
        return EncodedTile(tile.key, members, tile.row)

    def release(self, index: int) -> None:
        """Give slot ``index`` back to the ring (its tile failed or was unpacked)."""
        self.free.append(index)

    def close(self) -> None:
        """Unmap and close every slot (the writers must be done with them)."""
        for slot in self.slots:
            slot.memory.close()
            os.close(slot.ref.fd)
        self.slots.clear()
        self.free.clear()


def _make_slot(serial: int, in_bytes: int, size: int) -> _Slot | None:
    """A slot of ``size`` bytes of shared memory, reserved up front, or None where the memory is not there."""
    fd = os.memfd_create(f"synthgen-tiles-{serial}", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.posix_fallocate(fd, 0, size)  # ENOSPC/ENOMEM now rather than SIGBUS on a first write later
        memory = mmap.mmap(fd, size)
    except OSError:
        os.close(fd)
        return None
    return _Slot(SlotRef(os.getpid(), fd, size, serial), memory, in_bytes)


def open_shared_slots(executor: Executor, count: int) -> SharedSlots | None:
    """A ring of ``count`` slots for ``executor``'s writers, or None where writers cannot open them (then tiles
    go through the pipe). Starts the writers, since one of them must open a slot to show it can."""
    if not hasattr(os, "memfd_create") or not os.path.isdir("/proc/self/fd"):
        return None
    probe = _make_slot(-1, 0, mmap.PAGESIZE)
    if probe is None:
        return None
    try:
        probe.memory[:8] = b"synthgen"
        if executor.submit(probe_slot, probe.ref).result() != b"synthgen":
            return None
    except OSError:
        return None
    except BrokenProcessPool as exc:
        raise WriterDiedError(exc) from None
    finally:
        probe.memory.close()
        os.close(probe.ref.fd)
    return SharedSlots(count)
