"""The admin endpoint: Prometheus metrics, health, readiness, and the runtime kill switch."""

from shadowproxy.admin.addon import AdminAddon

__all__ = ["AdminAddon"]
