"""When the reader of our output goes away: ``buildnotify-cli ... | head -1``.

A shell tool dies of SIGPIPE at its next write to a pipe nobody reads any
more: at once, silently, and the shell reports status 141. Python ignores
SIGPIPE and raises BrokenPipeError instead, wherever the write happens (in a
reactor callback that error is logged or lost, and the reactor runs on), and
complains again ("Exception ignored ...") when it flushes stdout at exit.
These helpers give the commands the shell's behaviour back.
"""

from __future__ import annotations

import os
import select
import sys
from typing import TextIO

EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away


def _fileno(stream: TextIO | None) -> int | None:
    try:
        return stream.fileno() if stream is not None else None
    except (OSError, ValueError):  # closed, or not backed by a file descriptor
        return None


def _reader_gone(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are reported whatever is asked for
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence(*streams: TextIO | None) -> int:
    """Point those of ``streams`` (default: stdout and stderr) whose reader has
    gone at /dev/null, so that what is still buffered, and Python's flush at
    exit, go nowhere instead of raising again; returns EXIT_CLOSED_PIPE."""
    for stream in streams or (sys.stdout, sys.stderr):
        fd = _fileno(stream)
        if fd is not None and _reader_gone(fd):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return EXIT_CLOSED_PIPE
