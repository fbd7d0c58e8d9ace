"""Callgrind's client requests from Python: instrumentation on only around the measured calls."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from typing import Any


class Callgrind:
    """Callgrind's client requests (``CALLGRIND_START_INSTRUMENTATION`` & co.) from Python.

    valgrind's client requests are C macros: a "special instruction preamble" (four ``rol``
    of ``rdi`` that add up to a no-op) then ``xchg rbx, rbx``, with ``rax`` pointing at the
    request's arguments and the answer in ``rdx``. Natively this is a no-op returning 0; under
    valgrind the JIT recognises it. ``torch._C._valgrind_toggle`` only toggles *collection*,
    which does not turn instrumentation on under ``--instr-atstart=no``, and
    ``callgrind_control -i on`` is asynchronous; so the harness writes those 13 instructions
    into an executable page and calls them through ctypes (x86-64 Linux only)."""

    _BASE = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T')
    DUMP_STATS = _BASE + 0
    ZERO_STATS = _BASE + 1
    TOGGLE_COLLECT = _BASE + 2
    DUMP_STATS_AT = _BASE + 3
    START_INSTRUMENTATION = _BASE + 4
    STOP_INSTRUMENTATION = _BASE + 5
    RUNNING_ON_VALGRIND = 0x1001
    CODE = bytes.fromhex(
        "4889f8"  # mov rax, rdi        (&args)
        "31d2"  # xor edx, edx          (default answer 0)
        "48c1c703" "48c1c70d" "48c1c73d" "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
        "4887db"  # xchg rbx, rbx       (the request)
        "4889d0"  # mov rax, rdx        (return the answer)
        "c3"  # ret
    )  # fmt: skip

    def __init__(self) -> None:
        self._fn: Any = None
        self._page: Any = None
        self._dumps = 0
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            return
        import ctypes
        import mmap

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(self.CODE)
        self._page = page  # keep the mapping alive as long as the function
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        self._fn = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)(addr)

    def request(self, code: int, arg: int = 0) -> int:
        """Issue one client request; returns valgrind's answer (0 outside valgrind)."""
        if self._fn is None:
            return 0
        import ctypes

        args = (ctypes.c_ulong * 6)(code, arg, 0, 0, 0, 0)
        return int(self._fn(ctypes.addressof(args)))

    @property
    def running(self) -> bool:
        """True when this process runs under valgrind."""
        return self.request(self.RUNNING_ON_VALGRIND) > 0

    def count(self, fn: Callable[[], Any], *, repeats: int, out_file: str) -> list[int]:
        """Instructions of each of ``repeats`` calls of ``fn`` (instrumentation on around them,
        collection on only inside each call). Needs ``--collect-atstart=no``; the caller warms
        ``fn`` up first (uninstrumented: lazy initialisation is not what a call costs)."""
        import ctypes

        counts: list[int] = []
        self.request(self.START_INSTRUMENTATION)  # flushes the translations: slow, not counted
        try:
            for _ in range(repeats):
                self.request(self.ZERO_STATS)
                self.request(self.TOGGLE_COLLECT)  # on
                try:
                    fn()
                finally:
                    self.request(self.TOGGLE_COLLECT)  # off
                self._dumps += 1
                label = f"modelkit-{os.getpid()}-{self._dumps}"
                buf = ctypes.create_string_buffer(label.encode())
                self.request(self.DUMP_STATS_AT, ctypes.addressof(buf))
                counts.append(_read_dump(out_file, label))
        finally:
            self.request(self.STOP_INSTRUMENTATION)
        return counts


def _read_dump(out_file: str, label: str) -> int:
    """The total instruction count of the callgrind dump triggered by ``label``."""
    import glob

    for path in sorted(glob.glob(glob.escape(out_file) + ".*"), key=os.path.getmtime, reverse=True):
        total = None
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
        if f"Client Request: {label}\n" not in head:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
                    break
        if total is not None:
            os.unlink(path)  # read once; keeps the folder small
            return total
    raise RuntimeError(f"callgrind dump {label!r} not found next to {out_file}")


_CALLGRIND: Callgrind | None = None


def callgrind() -> Callgrind:
    """The process's :class:`Callgrind` (built on first use)."""
    global _CALLGRIND
    if _CALLGRIND is None:
        _CALLGRIND = Callgrind()
    return _CALLGRIND
