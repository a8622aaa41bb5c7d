"""The code the server sends to a driver kernel, one function per snippet.

Every value that reaches the code goes through repr() (of a str: a Python literal of exactly that string)
or int(), so nothing a client sends can escape its literal. The driver-side functions called here live in
``dli_kernel.driver``; this module only names them.
"""

from __future__ import annotations

import json
from typing import Any

from dli_kernel.protocol import result_path

# Run silently before a call that needs the runtime; importing it again is a no-op.
RUNTIME_IMPORT = "import dli_kernel.driver.runtime as _dli"


def bootstrap(settings: dict[str, Any]) -> str:
    """Start Spark with ``settings`` (master, app_name, conf); the expression's value is the app info JSON."""
    return f"_dli.bootstrap({json.dumps(settings)!r})"


def app_info() -> str:
    """The running Spark application's id and UI address, as JSON."""
    return "_dli.app_info()"


def executor_count() -> str:
    """How many executors have registered with the driver's SparkContext (an int)."""
    return "_dli.executor_count()"


def run_sql(query: str, max_rows: int) -> str:
    """A SQL statement whose result the driver displays as Livy's SQL result."""
    return f"_dli.run_sql({query!r}, max_rows={int(max_rows)})"


def arrow_statement(code: str, kind: str, max_rows: int, statement_id: int) -> str:
    """An Arrow statement: ``code`` is SQL, or a Python expression for a DataFrame."""
    return (
        "import dli_kernel.driver.arrow_results as _dli_arrow\n"
        f"_dli_arrow.run({code!r}, {kind!r}, max_rows={int(max_rows)}, path={result_path(statement_id)!r})"
    )


def scala_statement() -> str:
    """Runs the Scala code that travels beside it as message metadata (never pasted into Python)."""
    return "_dli.run_scala()"


def scala_completion() -> str:
    """Completes the Scala code and cursor that travel beside it as message metadata."""
    return "_dli.complete_scala()"


# -- shared-driver sessions: the host's functions, and the attaching of a session's kernel --------------

# Run silently before a call of the host's functions; the host's runtime is imported already.
SHARED_IMPORT = "import dli_kernel.driver.shared as _dli_shared"


def open_shared(key: str) -> str:
    """In the host: open session ``key``; the value is ``{"port", "secret"}`` as JSON."""
    return f"_dli_shared.open_session({str(key)!r})"


def release_shared(key: str) -> str:
    """In the host: end session ``key`` in the JVM; the value is ``{"released", "uncached"}`` as JSON."""
    return f"_dli_shared.release_session({str(key)!r})"


def open_shared_count() -> str:
    """In the host: how many sessions it has open (an int)."""
    return "_dli_shared.open_sessions()"


def attach(settings: dict[str, Any]) -> str:
    """In a session's kernel (after RUNTIME_IMPORT): connect to the host with ``{"gateway": {"port",
    "secret"}, "key"}``; the value is the shared app's info as JSON, with ``"sharedDriver": true``."""
    return f"_dli.attach({json.dumps(settings)!r})"
