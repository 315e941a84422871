"""Kept so that ``pyro_flows.flows_image`` imports keep working: the builders now live in
:mod:`pyro_flows.flows.image`."""

from .flows.image import *  # noqa: F403
from .flows.image import __all__  # noqa: F401
