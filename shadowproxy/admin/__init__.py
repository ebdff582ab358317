"""The admin endpoint: Prometheus metrics, health, readiness, and the runtime kill switch.

`AdminAddon` is imported when first asked for: the `/metrics` renderer process
(`python -m shadowproxy.admin.render`) imports this package, and must not pay for mitmproxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shadowproxy.admin.addon import AdminAddon

__all__ = ["AdminAddon"]


def __getattr__(name: str) -> Any:
    if name == "AdminAddon":
        from shadowproxy.admin.addon import AdminAddon

        return AdminAddon
    raise AttributeError(name)
