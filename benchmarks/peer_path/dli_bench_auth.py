"""A sparkmagic authenticator that sends the embedded server's bearer token.

It runs inside sparkmagic's kernel, in the peer's own virtual environment; the harness puts this folder on
that kernel's PYTHONPATH and names the class in sparkmagic's config.json. The token comes from the
environment so it is never written into a config file sparkmagic may log.
"""

from __future__ import annotations

import os

from sparkmagic.auth.customauth import Authenticator

TOKEN_ENV = "DLI_BENCH_PEER_TOKEN"


class BearerToken(Authenticator):
    """requests calls this on every request sparkmagic sends to the Livy endpoint."""

    def __call__(self, request):
        request.headers["Authorization"] = "Bearer " + os.environ[TOKEN_ENV]
        return request
