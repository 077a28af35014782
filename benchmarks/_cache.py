"""Page-cache control for cold reads: eviction, and a check that it worked."""

from __future__ import annotations

import ctypes
import mmap
import os


def evict(paths: list[str], drop_caches: bool = True) -> str:
    """Drops the files from the page cache; says how ("warm" when it could not).

    With ``drop_caches`` the whole page cache is dropped where the machine
    allows it; otherwise, or where it does not, only these files are evicted.
    """
    os.sync()
    how = "cold (drop_caches)"
    try:
        if not drop_caches:
            raise PermissionError("not asked to")
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("1")
    except OSError:
        how = "cold (posix_fadvise DONTNEED)"
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    cached = max((resident_fraction(path) for path in paths), default=0.0)
    return how if cached < 0.05 else "warm"


def resident_fraction(path: str) -> float:
    """Returns the fraction of a file's pages in the page cache (``mincore``)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with (
        open(path, "rb") as file,
        mmap.mmap(file.fileno(), size, mmap.MAP_PRIVATE) as m,
    ):
        anchor = ctypes.c_char.from_buffer(m)
        failed = libc.mincore(
            ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vector
        )
        del anchor
    if failed:
        return 1.0
    return sum(bytes(vector)) / pages
