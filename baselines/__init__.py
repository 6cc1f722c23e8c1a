"""Model definitions and the Lightning modules that train them; every module here is imported so models register."""

import sys

from slimbench.baselines.registry import MODELS, build_model, list_models, register_model
from slimbench.core.discovery import import_submodules

import_submodules(sys.modules[__name__])

__all__ = ["MODELS", "build_model", "list_models", "register_model"]
