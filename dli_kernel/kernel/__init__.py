"""The Jupyter side: the wrapper kernels, the magics, and the notebook's session. Runs in the user's kernel
(or IPython) process and reaches sessions only through ``dli_kernel.client``."""
