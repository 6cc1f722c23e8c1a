"""Compression methods, one registry entry each; every module here is imported so its entries register."""

import sys

from slimbench.core.discovery import import_submodules
from slimbench.methods.base import (METHODS, Method, MethodContext, Outcome, Stage, build_method, list_methods,
                                    register_method)

import_submodules(sys.modules[__name__])

__all__ = ["METHODS", "Method", "MethodContext", "Outcome", "Stage", "build_method", "list_methods", "register_method"]
