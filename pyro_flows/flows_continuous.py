"""Kept so that ``pyro_flows.flows_continuous`` imports keep working: the builders now live in
:mod:`pyro_flows.flows.continuous`."""

from .flows.continuous import *  # noqa: F403
from .flows.continuous import __all__  # noqa: F401
