"""The code the server sends to a driver kernel, one function per snippet.

Every value that reaches the code goes through repr() (of a str: a Python literal of exactly that string)
or int(), so nothing a client sends can escape its literal. The driver-side functions called here live in
``dli_kernel.driver``; this module only names them.
"""

from __future__ import annotations

from dli_kernel.protocol import result_path


def arrow_statement(code: str, kind: str, max_rows: int, statement_id: int) -> str:
    """An Arrow statement: ``code`` is SQL, or a Python expression for a DataFrame."""
    return (
        "import dli_kernel.driver.arrow_results as _dli_arrow\n"
        f"_dli_arrow.run({code!r}, {kind!r}, max_rows={int(max_rows)}, path={result_path(statement_id)!r})"
    )
