"""Which live (upstream) connections are new: the shadow call follows live's (shadow.client).

After the answer, `first_use` says whether the exchange was the first on its server connection
(it was opened for it). When the copy starts, before live has a connection, `predict_new` says
whether live will open one: mitmproxy reuses the server connection the same client
connection's last exchange used while it is open; otherwise the flow's own connection is new
unless it is open and has answered before (reverse mode may connect as the client does). A
wrong guess only leaves that exchange out of latency (mixed kinds, shadow.pipeline).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mitmproxy import http

SEEN_CONNS = 10_000  # connections remembered (each map), oldest forgotten first


class LiveConnections:
    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()  # server connections that answered
        self._last: OrderedDict[str, Any] = OrderedDict()  # client connection -> its last server connection

    def first_use(self, conn_id: str) -> bool:
        """Whether this is the first answer on that server connection (it was opened for it)."""
        seen = self._seen
        if conn_id in seen:
            return False
        seen[conn_id] = None
        if len(seen) > SEEN_CONNS:
            seen.popitem(last=False)
        return True

    def answered(self, flow: http.HTTPFlow) -> None:
        """The server connection this client connection's exchange used: the next may reuse it."""
        last, client = self._last, flow.client_conn.id
        last[client] = flow.server_conn
        last.move_to_end(client)
        if len(last) > SEEN_CONNS:
            last.popitem(last=False)

    def predict_new(self, flow: http.HTTPFlow) -> bool:
        """Whether live will open a new connection for this request (not yet sent)."""
        last = self._last.get(flow.client_conn.id)
        if last is not None and last.connected:
            return False
        sc = flow.server_conn
        return sc is None or not sc.connected or sc.id not in self._seen
