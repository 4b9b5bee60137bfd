"""Rollback journal for files that a library rewrites in place (HDF5): a killed writer leaves the file as it was.

HDF5 appends new data at the end of the file but updates its metadata (superblock, group B-trees, heaps) in
place when it closes, in several writes. A process killed between them leaves a file whose metadata points
past its recorded end: every group in it becomes unreadable, not only the one being written.
:func:`journaled` hands the library a file object that, before overwriting any byte that existed when the file
was opened, appends that byte range's old content to a journal ``.NAME.journal`` beside the file. The journal
is removed once the writer has closed the file. A journal found on the next open (:func:`recover`) belongs to
a writer that died: its old contents are written back, in reverse order, and the file is cut to its old size,
which restores the file exactly as it was before that writer opened it. Rolling back is idempotent, so a
recovery that is itself killed is simply redone.

Guarantee: against processes that stop at any point (SIGKILL, out of memory, Ctrl-C). Not against power
failure: the journal is not fsync'ed before each in-place write, which would cost a disk flush per metadata
block.

Journal layout (little-endian): header ``MAGIC``, old size (u64), device and inode of the file (u64 each: a
journal left beside another file of that name is stale and dropped), created (u8: the file did not exist
before), CRC-32 of those; then records: offset (u64), length (u64), the old bytes, CRC-32 of all three. A torn header
means the writer died before touching the file; a torn record means its in-place write never started.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["JournaledFile", "journal_path", "journaled", "lock_exclusive", "recover"]

MAGIC = b"DDJRNL1\n"
_HEADER = struct.Struct("<QQQB")
_RECORD = struct.Struct("<QQ")
_CRC = struct.Struct("<I")


def journal_path(path: str | os.PathLike) -> Path:
    """The journal of ``path``: ``.NAME.journal`` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.journal"


def lock_exclusive(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting; False when another open file holds a lock (HDF5
    takes a shared one for every reader and an exclusive one for every writer).

    As HDF5 does, ``HDF5_USE_FILE_LOCKING=FALSE`` turns locking off, and a file system without locks (some
    network mounts) is written without one.
    """
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() in ("FALSE", "0"):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            return True
        raise
    return True


def _lock(fd: int, path: Path) -> None:
    if not lock_exclusive(fd):
        raise BlockingIOError(f"{path} is open in another process")


def _read_journal(journal: Path, fd: int) -> tuple[int, bool, list[tuple[int, bytes]]] | None:
    """(old size, created, records) of the journal of the file open as ``fd``; None when its header is torn
    (the file was never touched) or it belongs to another file."""
    data = journal.read_bytes()
    start = len(MAGIC) + _HEADER.size
    if len(data) < start + _CRC.size or not data.startswith(MAGIC):
        return None
    (crc,) = _CRC.unpack_from(data, start)
    if crc != zlib.crc32(data[:start]):
        return None
    old_size, device, inode, created = _HEADER.unpack_from(data, len(MAGIC))
    stat = os.fstat(fd)
    if (device, inode) != (stat.st_dev, stat.st_ino):
        return None
    records = []
    pos = start + _CRC.size
    while pos + _RECORD.size <= len(data):
        offset, length = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length
        if end + _CRC.size > len(data):
            break
        (crc,) = _CRC.unpack_from(data, end)
        if crc != zlib.crc32(data[pos:end]):
            break
        records.append((offset, data[pos + _RECORD.size : end]))
        pos = end + _CRC.size
    return old_size, bool(created), records


def _roll_back(fd: int, path: Path, journal: Path) -> bool:
    """Undo the interrupted write recorded in ``journal`` on the open, locked ``fd`` of ``path``; returns
    whether ``path`` was removed (a file the dead writer had created)."""
    state = _read_journal(journal, fd)
    removed = False
    if state is not None:
        old_size, created, records = state
        if created:
            path.unlink(missing_ok=True)
            removed = True
        else:
            for offset, old in reversed(records):
                os.pwrite(fd, old, offset)
            os.ftruncate(fd, old_size)
            os.fsync(fd)
    journal.unlink()
    return removed


def recover(path: str | os.PathLike) -> bool:
    """Roll ``path`` back to its state before a writer that died with it open; returns whether there was
    anything to undo. Raises :class:`BlockingIOError` when a live process holds the file open (its journal is
    in use), and ``PermissionError`` naming the journal when the file cannot be opened for writing."""
    path = Path(path)
    journal = journal_path(path)
    if not journal.exists():
        return False
    if not path.exists():
        journal.unlink(missing_ok=True)
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:
        raise PermissionError(
            f"{path} was left mid-write by a process that died ({journal} holds what it overwrote); open it "
            "once with write access to roll it back"
        ) from None
    try:
        _lock(fd, path)
        _roll_back(fd, path, journal)
    finally:
        os.close(fd)
    return True


class JournaledFile(io.RawIOBase):
    """A read/write file object over ``fd`` that saves the old content of every byte below ``base`` (the size
    when opened) to the journal ``jfd`` before overwriting or cutting it."""

    def __init__(self, fd: int, jfd: int, base: int) -> None:
        super().__init__()
        self._fd, self._jfd, self._base, self._pos = fd, jfd, base, 0
        self._saved: set[tuple[int, int]] = set()

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = os.fstat(self._fd).st_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        n = os.preadv(self._fd, [buffer], self._pos)
        self._pos += n
        return n

    def _save(self, offset: int, length: int) -> None:
        if length <= 0 or (offset, length) in self._saved:
            return
        old = os.pread(self._fd, length, offset)
        record = _RECORD.pack(offset, len(old)) + old
        os.write(self._jfd, record + _CRC.pack(zlib.crc32(record)))
        self._saved.add((offset, length))

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        view = memoryview(data).cast("B")
        if self._pos < self._base:
            self._save(self._pos, min(len(view), self._base - self._pos))
        written = 0
        while written < len(view):
            written += os.pwrite(self._fd, view[written:], self._pos + written)
        self._pos += written
        return written

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < self._base:
            self._save(size, self._base - size)
        os.ftruncate(self._fd, size)
        return size

    def flush(self) -> None:
        pass  # every write goes straight to the OS


@contextlib.contextmanager
def journaled(path: str | os.PathLike, create: bool = True) -> Iterator[JournaledFile]:
    """Open ``path`` for reading and writing under an exclusive lock and a rollback journal; yields the file
    object. The write is committed (journal removed) when the block ends; an
    exception in the block rolls the file back to its state before. A leftover journal of a dead writer is
    rolled back first. ``create``: make the file when missing (else ``FileNotFoundError``). Raises
    :class:`BlockingIOError` when another process holds the file open."""
    path = Path(path)
    journal = journal_path(path)
    created = False
    if create:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            created = True
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)
    else:
        fd = os.open(path, os.O_RDWR)
    try:
        _lock(fd, path)
        if not created and journal.exists() and _roll_back(fd, path, journal):
            os.close(fd)  # the dead writer had created the file, now removed: start anew
            fd = -1
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such file (a writer that died had created it)", str(path))
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            created = True
            _lock(fd, path)
        stat = os.fstat(fd)
        base = stat.st_size
        header = MAGIC + _HEADER.pack(base, stat.st_dev, stat.st_ino, int(created))
        jfd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(jfd, header + _CRC.pack(zlib.crc32(header)))
            try:
                yield JournaledFile(fd, jfd, base)
            except BaseException:
                _roll_back(fd, path, journal)
                raise
            journal.unlink()
        finally:
            os.close(jfd)
    finally:
        if fd >= 0:
            os.close(fd)
