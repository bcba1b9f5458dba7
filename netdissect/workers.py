"""Worker processes that die with the job that made them.

A job killed by SIGKILL (the out-of-memory killer, ``kill -9``) runs no cleanup, so the workers it
forked (DataLoader workers, a drawing pool) are not told to stop; a worker blocked on a queue
whose reader is gone may then live on for hours, holding its memory.  :func:`die_with_parent`,
called first thing in each worker (``worker_init_fn`` of a DataLoader, ``initializer`` of a
``multiprocessing.Pool``), ties the worker's life to its parent's:

* on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the worker the moment its
  parent dies (strictly: the parent *thread* that forked it; netdissect's loaders are iterated
  by the thread that made them, so their workers are done before that thread can end);
* elsewhere (or if ``prctl`` is refused), a daemon thread that checks every ``poll`` seconds
  whether the worker still has its parent, and ends it when it does not.

Both also cover a parent that died before the worker got this far (the worker then ends at once).

    >>> import os
    >>> from netdissect.workers import parent_alive
    >>> parent_alive(os.getppid()), parent_alive(-1)
    (True, False)

This module imports neither torch nor numpy.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from functools import partial

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_alive(parent_pid: int) -> bool:
    """Whether this process is still the child of ``parent_pid`` (an orphan is re-parented)."""
    return os.getppid() == parent_pid


def _set_pdeathsig(sig: int) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when its parent dies; False if not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        return False


def _watch(parent_pid: int, poll: float) -> None:
    while parent_alive(parent_pid):
        time.sleep(poll)
    os._exit(1)  # no cleanup: the job this worker served is gone


def die_with_parent(parent_pid: int, *_ignored, poll: float = 1.0) -> None:
    """End this (worker) process when ``parent_pid`` dies; call it first thing in the worker.

    Extra positional arguments are ignored, so ``functools.partial(die_with_parent, os.getpid())``
    serves as a DataLoader ``worker_init_fn`` (which is passed the worker's id).
    """
    armed = _set_pdeathsig(signal.SIGKILL)
    if not parent_alive(parent_pid):  # the parent died before the kernel was asked to watch it
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch, args=(parent_pid, poll), name="netdissect-parent-watch",
                         daemon=True).start()


def worker_init(parent_pid: int | None = None):
    """A picklable ``worker_init_fn`` / ``initializer`` that ties workers to this process (or ``parent_pid``)."""
    return partial(die_with_parent, os.getpid() if parent_pid is None else parent_pid)
