"""Datasets and task adapters; every module here is imported so its tasks register."""

import sys

from slimbench.core.discovery import import_submodules
from slimbench.tasks.base import InputSpec, Split, Task, TaskParams
from slimbench.tasks.registry import TASKS, build_task, list_tasks, register_task

import_submodules(sys.modules[__name__])

__all__ = ["InputSpec", "Split", "Task", "TaskParams", "TASKS", "build_task", "list_tasks", "register_task"]
