"""Jupyter kernels and IPython magics for remote Spark sessions (DLI, DLC, Livy)."""

__version__ = "0.1.0"
