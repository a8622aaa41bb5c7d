"""Jupyter kernels and IPython magics for remote Spark sessions (DLI, DLC, Livy)."""

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dli_kernel``: the magics of the wrapper kernels in any IPython."""
    import atexit  # the kernel alone should not pay for the magics' imports

    from dli_kernel.kernel.magics import load_ipython_extension as load

    holder = load(ipython)
    # A plain IPython has no shutdown hook of its own: delete the session as the process ends.
    atexit.register(holder.close)


def unload_ipython_extension(ipython: Any) -> None:
    # Every magics class holds the same holder; closing it twice is harmless but once is enough.
    registered = ipython.magics_manager.registry.values()
    holders = {id(m.holder): m.holder for m in registered if hasattr(m, "holder")}
    for holder in holders.values():
        holder.close()
