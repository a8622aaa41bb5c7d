"""A fork server for driver kernels: one Python process that has already imported ipykernel, PySpark and
the driver runtime, and forks a new driver kernel from itself on request.

A kernel started as a new process spends most of a second importing those before it can answer; a shared
driver's session (``shared``) needs nothing else before it is ready, so that second was most of its start.
Forked from here, the kernel starts with everything imported, and the pages of what was imported are
shared with the fork server until written to.

Started as ``python -m dli_kernel.driver.fork_server STATE_DIR``: the state dir is there only for the
command line, which a restarted sessions server reads to know a kernel forked here as one of its own.
Requests come one JSON object per line on stdin, ``{"workdir", "log", "connection_file"}``; each answer is
one line on stdout, ``{"pid": N}`` or ``{"error": "..."}``. The server exits when its stdin closes (the
sessions server let go of it). The forked kernel is a process as ``python -m ipykernel_launcher`` would
be: a session of its own, its working directory, stdout and stderr into the log, the fork server's
environment (the one every driver of the sessions server gets), random numbers of its own (the hash
seed stays the fork server's).

Only where ``os.fork`` is safe to use this way (Linux); the sessions server starts kernels as processes
of their own elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from dli_kernel.protocol import DRIVER_KERNEL_OPTIONS

READY = "ready"
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "py4j.java_gateway",
    "pyspark.java_gateway",
    "pyspark.sql",
    # PySpark's py4j argument converters import these on a process's first Spark call with arguments:
    # most of a shared session's attach when left to it.
    "pyspark.testing.utils",
    "pandas",
    "pyarrow",
    "dli_kernel.driver.runtime",
    "dli_kernel.driver.shared",
)


def _preload() -> None:
    """Import what every driver kernel imports before it answers, and what a shared session's attach does."""
    for module in PRELOAD:
        with contextlib.suppress(ImportError):  # one a kernel would miss as well
            importlib.import_module(module)


def _become_kernel(request: dict[str, Any]) -> None:
    """In the forked child: turn into a driver kernel as ``python -m ipykernel_launcher`` would be, and
    exit when it ends; never returns."""
    code: Any = 1
    try:
        # The fork server lets the OS reap its children; a kernel waits for its own (the JVM, subprocesses).
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _reseed()
        os.setsid()
        os.chdir(request["workdir"])
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        # The fork server's stdin and stdout are its requests and answers: none of the kernel's business.
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        from ipykernel import kernelapp

        sys.argv = [kernelapp.__file__, "-f", request["connection_file"], *DRIVER_KERNEL_OPTIONS]
        kernelapp.IPKernelApp.launch_instance(argv=sys.argv[1:])
        code = 0
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        traceback.print_exc()
    finally:
        # As a process of its own would at its end, in the interpreter's order (the kernel's atexit
        # handler stops threads that are still finishing their last message); never back into the fork
        # server's loop.
        try:
            for thread in threading.enumerate():
                if not thread.daemon and thread is not threading.current_thread():
                    thread.join()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _reseed() -> None:
    """Give the kernel random numbers of its own: ``random`` reseeds itself in a fork, NumPy's global
    generator (seeded when the fork server imported it) does not."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _answer(out: Any, answer: dict[str, Any]) -> None:
    out.write(json.dumps(answer) + "\n")
    out.flush()


def serve() -> None:
    """Answer fork requests on stdin until it closes."""
    # As ipykernel_launcher does: a module in the directory the server started in must not shadow one
    # the kernel imports.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path.cwd().resolve():
        del sys.path[0]
    _preload()
    # Children are reaped by the OS: a kernel that ends leaves no zombie behind in this process.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    out = sys.stdout
    _answer(out, {"state": READY})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            missing = {"workdir", "log", "connection_file"} - set(request)
            if missing:
                names = ", ".join(sorted(missing))
                raise ValueError(f"a fork request names workdir, log and connection_file; missing: {names}")
        except ValueError as error:
            _answer(out, {"error": str(error)})
            continue
        out.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as error:
            _answer(out, {"error": f"fork failed: {error}"})
            continue
        if pid == 0:
            _become_kernel(request)
        _answer(out, {"pid": pid})


if __name__ == "__main__":
    # Served from the module under its own name, not ``__main__``: a kernel's IPython makes its user
    # namespace the ``__main__`` module.
    from dli_kernel.driver.fork_server import serve as serve_from_module

    serve_from_module()
