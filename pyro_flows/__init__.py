"""pyro_flows: normalizing flows for Pyro, correct in both directions and fast where it matters."""

from .flow import Flow

__version__ = "0.1.0"
__all__ = ["Flow"]
