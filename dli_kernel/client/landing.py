"""Whether a statement POST that got no clear answer landed: found in the session's statements, or not.

A POST is not idempotent: sent twice it runs the code twice. When its answer is lost (the connection
broke, the answer was cut short or timed out, a gateway answered 5xx), the client looks at the session's
statements instead of sending it again: a statement newer than the last one it knew, with the same code,
is the one it sent. A server that takes a moment to record it is given the same patience as a GET retry
(the client's retry delays) before the client says it does not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from dli_kernel.client.errors import ClientError, ServerError, with_note
from dli_kernel.client.models import StatementInfo

UNKNOWN_HISTORY = (
    "The statement may or may not have started, and this client does not know the session's statements "
    "well enough to tell, so it was not sent again; list the statements to see."
)
GATEWAY_ERROR = (
    "The statement is not in the session's list yet, but this error may come from a gateway while the "
    "statement is still being made, so it was not sent again; list the statements to see."
)
NO_ANSWER = (
    "The statement is not in the session's list {waited}but may still start, so it was not sent again; "
    "list the statements to see."
)


class Lister(Protocol):
    def list_statements(self, session_id: str | int) -> list[StatementInfo]: ...


def resolve_submit(
    client: Lister,
    session_id: str | int,
    code: str,
    err: ClientError,
    last: int | None,
    *,
    pauses: tuple[float, ...],
    server_answer_means_not_recorded: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> StatementInfo | None:
    """After a POST of ``code`` that may have landed: the statement it made, or None if it surely did not
    (sending it again is safe). Raises ``err`` with a note saying it was not sent again otherwise.

    ``last``: the newest statement id known before the POST (None: unknown); ``pauses``: seconds to wait
    before each further look when there was no answer at all.
    """
    if last is None:
        raise with_note(err, UNKNOWN_HISTORY) from None
    answered = isinstance(err, ServerError)
    looks = (0.0,) if answered else (0.0, *pauses)
    for pause in looks:
        if pause:
            sleep(pause)
        for statement in client.list_statements(session_id):
            if statement.id > last and statement.code == code:
                return statement
    if answered and server_answer_means_not_recorded:
        return None  # the server answered and did not record it: it did not land
    if answered:
        raise with_note(err, GATEWAY_ERROR) from None
    waited = f"{sum(looks):g} s later " if sum(looks) else ""
    # No clear answer: the server may still be taking it. Sending again could run it twice.
    raise with_note(err, NO_ANSWER.format(waited=waited)) from None
