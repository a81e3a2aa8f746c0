"""Imported only by the fork server of a parallel sweep (listed in ``executors.PRELOAD``).

Ties the server's life to the sweep's: Linux's parent-death signal (``PR_SET_PDEATHSIG``) makes a
killed sweep take the fork server with it, and the cell processes, whose own death signal is set
in ``executors._worker_init``, follow the server. Without it a SIGKILLed sweep would leave the
server and its running cells behind as orphans.
"""
import os
import signal
import sys

if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    if os.getppid() == 1:  # the sweep died before the line above ran
        os._exit(1)
