"""Transport errors: a copy that a backend could not complete.

They name the peer (source rank and the transport's name for it) and the request, so a
log line alone says which transfer of which request failed.
"""

from __future__ import annotations

from .errors import KvplanError


class TransportError(KvplanError):
    """A transport failed to move a transfer's bytes, or is missing or misused.

    >>> str(TransportError("NIXL_ERR_BACKEND", peer="rank 1 (agent 'p1')", request="req-7"))
    "NIXL_ERR_BACKEND [peer rank 1 (agent 'p1'), request 'req-7']"
    """

    def __init__(self, message: str, *, peer: str | None = None, request: str | None = None):
        where = ", ".join(part for part in (
            f"peer {peer}" if peer is not None else "",
            f"request {request!r}" if request is not None else "") if part)
        super().__init__(f"{message} [{where}]" if where else message)
        self.peer = peer
        self.request = request


class TransportTimeout(TransportError):
    """A transfer did not complete within the backend's `timeout_s`."""


class BackendNotFound(KvplanError):
    """`load_backend` was given a name no installed backend has, or its library is missing."""
