"""Code cells: ``%%pyspark``, ``%%spark``/``%%scala`` on the session, ``%%local`` here, and
``%send_to_spark`` to hand a local DataFrame or string to the session."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import cell_magic, line_magic, magics_class

from dli_kernel.kernel.display import Result
from dli_kernel.kernel.magics import args
from dli_kernel.kernel.magics.runner import RunnerMagics, remote_error


@magics_class
class CodeMagics(RunnerMagics):
    """Cells of code: on the session, or in this kernel."""

    @cell_magic
    def pyspark(self, line: str, cell: str) -> Result | None:
        """Run the cell as PySpark code on the notebook's session; its last expression's value is the
        cell's ``Out[n]`` where the server tells values from prints (the embedded server does)."""
        args.no_arguments("%%pyspark", line)
        return self.runner.show(self.runner.run(cell, "pyspark"))

    @cell_magic
    def spark(self, line: str, cell: str) -> Result | None:
        """Run the cell as Scala code on the notebook's session."""
        args.no_arguments("%%spark", line)
        return self.runner.show(self.runner.run(cell, "spark"))

    @cell_magic
    def scala(self, line: str, cell: str) -> Result | None:
        """Run the cell as Scala code on the notebook's session (same as %%spark)."""
        args.no_arguments("%%scala", line)
        return self.runner.show(self.runner.run(cell, "spark"))

    @cell_magic
    def local(self, line: str, cell: str) -> None:
        """Run the cell in this kernel's own Python."""
        args.no_arguments("%%local", line)
        result = self.ipython.run_cell(cell, store_history=False)
        if not result.success:
            raise remote_error("LocalError", "the %%local cell failed (its traceback is above).", [])

    @line_magic
    def send_to_spark(self, line: str) -> None:
        """Send a local pandas DataFrame (as a Spark DataFrame) or a string to the session.

        %send_to_spark -i VAR [-n NAME]
        """
        parser = args.Parser(prog="%send_to_spark")
        parser.add_argument("-i", dest="var", type=args.identifier, required=True, metavar="VAR")
        parser.add_argument("-n", dest="name", type=args.identifier, metavar="NAME")
        parsed = args.parse(parser, line)
        if parsed is None:
            return
        namespace = self.ipython.user_ns
        if parsed.var not in namespace:
            raise UsageError(f"%send_to_spark: there is no local variable {parsed.var!r}")
        value = namespace[parsed.var]
        name = parsed.name or parsed.var
        if isinstance(value, str):
            code = f"{name} = {value!r}"
        elif type(value).__name__ == "DataFrame" and hasattr(value, "to_json"):
            # repr() makes the JSON a Python literal; nothing of the data becomes code.
            payload = value.to_json(orient="table", date_format="iso", index=False)
            code = (
                "import io as _dli_io\nimport pandas as _dli_pd\n"
                f"{name} = spark.createDataFrame("
                f"_dli_pd.read_json(_dli_io.StringIO({payload!r}), orient='table'))"
            )
        else:
            kind = type(value).__name__
            raise UsageError(
                f"%send_to_spark: {parsed.var} is a {kind}; a pandas DataFrame or str is accepted"
            )
        self.runner.run(code, "pyspark")
        what = "a Spark DataFrame" if not isinstance(value, str) else "a str"
        print(f"{name} is now {what} in the session.")
