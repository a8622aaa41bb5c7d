"""Jupyter kernels and IPython magics for remote Spark sessions (DLI, DLC, Livy)."""

from typing import Any

__version__ = "0.1.0"


def chart(
    frame: Any,
    kind: str = "bar",
    x: str | None = None,
    y: str | list[str] | None = None,
    agg: str | None = None,
) -> Any:
    """A pandas DataFrame (e.g. from ``%%sql -o``) drawn as ``%%sql --chart`` draws a result: Vega-Lite for
    JupyterLab and VS Code, a PNG for nbconvert and GitHub (with the ``charts`` extra), and a line of text.

    kind: bar, line, area, scatter or pie; x: the column along the x axis (default the first non-numeric);
    y: a column or a list of columns (default every other numeric one); agg: sum, avg, min, max or count.
    """
    from dli_kernel.kernel.charts import frame_chart  # only a chart pays for the chart code

    return frame_chart(frame, kind=kind, x=x, y=y, agg=agg)


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
