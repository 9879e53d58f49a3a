"""When the reader of our output goes away: ``buildnotify-cli ... | head -1``.

A shell tool dies of SIGPIPE at its next write to a pipe nobody reads any
more: at once, silently, and the shell reports status 141. Python ignores
SIGPIPE and raises BrokenPipeError instead, wherever the write happens (in a
reactor callback that error is logged or lost, and the reactor runs on), and
complains again ("Exception ignored ...") when it flushes stdout at exit.
These helpers give the commands the shell's behaviour back.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import sys
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.main import CONNECTION_DONE
from zope.interface import implementer

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


@implementer(IReadDescriptor)
class ReaderWatch:
    """Calls ``gone`` when the reader of the pipe at ``fd`` goes away: at once,
    not at the next write. A ``watch`` may print nothing for hours and must not
    hold its session that long.

    The write end of a pipe is never readable, so the reactor reports nothing
    but the reader's going (Linux: POLLERR, which epoll and poll turn into
    connectionLost; select calls doRead).
    """

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self.fd = fd
        self.gone = gone

    @classmethod
    def start(cls, reactor: Any, stream: TextIO, gone: Callable[[], None]) -> ReaderWatch | None:
        """Watch ``stream`` if it is a pipe we only write to (else None: a
        terminal or a file has no reader to lose)."""
        fd = _fileno(stream)
        if fd is None or not _write_only_pipe(fd):
            return None
        watch = cls(fd, gone)
        reactor.addReader(watch)
        return watch

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:  # noqa: N802
        return "ReaderWatch"

    def doRead(self) -> object:  # noqa: N802
        return CONNECTION_DONE

    def connectionLost(self, reason: object) -> None:  # noqa: N802
        self.gone()


def _write_only_pipe(fd: int) -> bool:
    # A pipe opened for reading too (a FIFO opened read-write) would be
    # readable whenever it holds our own output.
    return (
        stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    )
