"""Crash-safe file writing.

Every file the app produces is written under a temporary name in the target
folder, flushed to disk and then renamed over the final name, so that a kill at
any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".part-"


def _default_mode() -> int:
    # mkstemp creates files readable by the owner only; a finished file should get
    # the permissions any other new file would (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_mode()


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


UNTOUCHED_S = 3600  # a temporary nobody has written for this long is left over from a kill


def _writer_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no harmless probe there (os.kill would end the process): the age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _is_stale(path: Path, final: Path) -> bool:
    """Left behind by a killed writer, not one still writing (its process lives, or it wrote lately)."""
    pid_text = path.name[len(f".{final.name}{TEMP_MARK}"):].partition("-")[0]
    if not pid_text.isdigit():
        return True  # named before writers put their process id in: from an older version, long gone
    pid = int(pid_text)
    if os.name == "posix" and pid != os.getpid():
        return not _writer_alive(pid)
    try:  # this process (another thread may be writing it), or no way to ask: the age decides
        return time.time() - path.stat().st_mtime > UNTOUCHED_S
    except OSError:
        return False


def remove_stale_parts(final: Path) -> list[Path]:
    """Delete temporaries a killed earlier write of ``final`` left behind (never a live writer's); return them."""
    stale = [p for p in final.parent.glob(f".{final.name}{TEMP_MARK}*") if _is_stale(p, final)]
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it replaces ``final``.

    The caller writes the temporary file however it likes (and closes it). If the
    block raises, the temporary file is removed and ``final`` is untouched.
    ``mode`` (e.g. 0o600 for secrets) is set before anything is written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(final)
    # The writer's process id in the name: another writer can tell a live temporary from a leftover.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}{TEMP_MARK}{os.getpid()}-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _FILE_MODE if mode is None else mode)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str, mode: int | None = None) -> None:
    """Write UTF-8 ``text`` to ``final`` atomically (newlines kept as given)."""
    atomic_write_bytes(final, text.encode("utf-8"), mode)


# The one free-space rule, for downloads and for every file the converters write:
# what the files need plus this much. The larger of the two margins the app used to
# have: a disk that fills up mid-write costs the whole download or conversion, and
# the filesystem, the atomic temporary file's metadata and other programs need room
# too; 256 MiB is nothing next to a model of gigabytes.
DISK_MARGIN = 256 << 20


def check_free_space(folder: str | os.PathLike[str], needed: int, what: str, error: type[Exception] = OSError) -> None:
    """Refuse (``error``, with a message for the person) before writing ``needed`` bytes into ``folder``."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise error(
            f"Not enough free disk space in {folder}: {what} needs about {needed / 2**30:.1f} GiB more, "
            f"{free / 2**30:.1f} GiB is free. Free some space and try again; nothing was lost."
        )
