"""The wrapper kernels: an IPython kernel whose plain cells run on the notebook's remote Spark session.

A plain cell becomes a ``%%pyspark``, ``%%sql`` or ``%%spark`` cell of :mod:`dli_kernel.kernel.magics`; a cell
that starts with a magic the kernel knows (``%session``, ``%%sql``, ``%%local``, IPython's own) runs
here. So the kernels and ``%load_ext dli_kernel`` share one implementation, and ``%%local`` cells and
``-o`` variables live in this kernel's own Python namespace.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import Unicode

from dli_kernel import __version__
from dli_kernel.kernel.holder import SessionHolder
from dli_kernel.kernel.magics import load_ipython_extension

LANGUAGES: dict[str, dict[str, Any]] = {
    "pyspark": {
        "name": "python",
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "pygments_lexer": "ipython3",
    },
    "sql": {"name": "sql", "mimetype": "text/x-sql", "file_extension": ".sql", "codemirror_mode": "sql"},
    "spark": {
        "name": "scala",
        "mimetype": "text/x-scala",
        "file_extension": ".scala",
        "codemirror_mode": "text/x-scala",
    },
}
BANNERS = {"pyspark": "PySpark (DLI)", "sql": "Spark SQL (DLI)", "spark": "Spark (DLI)"}
_MAGIC = re.compile(r"(%%?)([\w.]+)")


class SparkKernel(IPythonKernel):
    implementation = "dli_kernel"
    implementation_version = __version__
    kind = Unicode("pyspark", help="the kind of plain cells: pyspark, sql or spark").tag(config=True)

    @property
    def language_info(self) -> dict[str, Any]:  # type: ignore[override]
        return LANGUAGES[self.kind]

    @property
    def banner(self) -> str:  # type: ignore[override]
        return f"{BANNERS[self.kind]}: cells run on a remote Spark session (dli_kernel {__version__})"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.holder = SessionHolder(kind=self.kind)
        load_ipython_extension(self.shell, self.holder)
        self.holder.start_in_background()

    def cell_code(self, code: str) -> str:
        """What IPython runs: the cell itself if it starts with a magic IPython knows, else a remote cell."""
        stripped = code.lstrip()
        if not stripped:
            return code
        first, _, rest = stripped.partition("\n")
        if first.strip() == "%%local":
            return rest  # plain Python in this kernel
        match = _MAGIC.match(first)
        shell = self.shell
        if (
            match
            and shell is not None
            and shell.find_magic(match.group(2), "cell" if match.group(1) == "%%" else "line")
        ):
            return code
        return f"%%{self.kind}\n{code}"

    async def do_execute(
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict | None = None,
        allow_stdin: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return await super().do_execute(
            self.cell_code(code), silent, store_history, user_expressions, allow_stdin, **kwargs
        )

    async def do_complete(self, code: str, cursor_pos: int) -> dict[str, Any]:
        if self.cell_code(code) != f"%%{self.kind}\n{code}":
            return super().do_complete(code, cursor_pos)  # a local cell: IPython completes it
        session = self.holder.session
        matches: list[str] = []
        if session is not None:
            matches = await asyncio.to_thread(session.complete, code, cursor_pos, self.kind)
        return {
            "status": "ok",
            "matches": matches,  # whole dotted names, as Livy gives them: they replace the whole token
            "cursor_start": cursor_pos - len(_token_before(code, cursor_pos)),
            "cursor_end": cursor_pos,
            "metadata": {},
        }

    def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        # A restart starts a new kernel process, which asks for its own session.
        self.holder.close()
        return super().do_shutdown(restart)


def _token_before(code: str, cursor: int) -> str:
    """The dotted name the cursor ends: what Livy's whole-name candidates replace."""
    text = code[:cursor]
    start = len(text)
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_."):
        start -= 1
    return text[start:]


def main() -> None:
    IPKernelApp.launch_instance(kernel_class=SparkKernel)


if __name__ == "__main__":
    main()
