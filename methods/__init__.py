"""Compression methods, one registry entry each; every module here is imported so its entries register."""

import sys

from slimbench.core.discovery import import_submodules
from slimbench.methods.base import (
                                    FAMILIES,
                                    METHODS,
                                    Method,
                                    MethodContext,
                                    Outcome,
                                    ReportTable,
                                    Stage,
                                    build_method,
                                    family_rank,
                                    list_methods,
                                    register_method,
)

import_submodules(sys.modules[__name__])

__all__ = ["FAMILIES", "METHODS", "Method", "MethodContext", "Outcome", "ReportTable", "Stage", "build_method",
           "family_rank", "list_methods", "register_method"]
