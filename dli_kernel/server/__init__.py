"""The embedded sessions server (``pip install 'dli-kernel[server]'``): Livy and DLI paths on real PySpark."""
