"""Jupyter kernels and IPython magics for remote Spark sessions (DLI, DLC, Livy)."""

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dli_kernel``: the magics of the wrapper kernels in any IPython."""
    import atexit  # the kernel alone should not pay for the magics' imports

    from dli_kernel.kernel.magics import load_ipython_extension as load

    magics = load(ipython)
    # A plain IPython has no shutdown hook of its own: delete the session as the process ends.
    atexit.register(magics.notebook.close)


def unload_ipython_extension(ipython: Any) -> None:
    for magics in list(ipython.magics_manager.registry.values()):
        if hasattr(magics, "notebook"):
            magics.notebook.close()
