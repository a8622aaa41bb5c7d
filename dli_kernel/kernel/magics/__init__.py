"""The magics: ``%session``, ``%%sql``, ``%%pyspark``/``%%spark``, ``%%local`` and ``%send_to_spark``.

One set of Magics classes serves both the wrapper kernels (whose plain cells become ``%%pyspark``,
``%%sql`` or ``%%spark`` cells) and any IPython through ``%load_ext dli_kernel``. Mistakes in a magic's
own input raise ``UsageError``: one line, no traceback. Errors of the remote code come back as exceptions
named as the remote named them, shown with the remote traceback only.
"""

from __future__ import annotations

from typing import Any

from dli_kernel.kernel.holder import SessionHolder
from dli_kernel.kernel.magics.code import CodeMagics
from dli_kernel.kernel.magics.runner import RemoteError, StatementRunner, remote_error, show_remote_error
from dli_kernel.kernel.magics.session import SessionMagics
from dli_kernel.kernel.magics.sql import SqlMagics

MAGICS = (SessionMagics, SqlMagics, CodeMagics)

__all__ = ["MAGICS", "RemoteError", "load_ipython_extension", "remote_error"]


def load_ipython_extension(ipython: Any, holder: SessionHolder | None = None) -> SessionHolder:
    """Register the magics on ``ipython``, all sharing ``holder`` (a new one if None); that holder.

    ``%load_ext dli_kernel`` calls this, and so does each wrapper kernel.
    """
    runner = StatementRunner(holder or SessionHolder())
    for magics in MAGICS:
        ipython.register_magics(magics(ipython, runner))
    ipython.set_custom_exc((RemoteError,), show_remote_error)
    return runner.holder
