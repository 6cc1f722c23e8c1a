"""Datasets and task adapters; every module here is imported so its tasks register."""

import sys

from harness.discovery import import_submodules
from tasks.base import InputSpec, Split, Task, TaskParams
from tasks.registry import TASKS, build_task, list_tasks, register_task

import_submodules(sys.modules[__name__])

__all__ = ["InputSpec", "Split", "Task", "TaskParams", "TASKS", "build_task", "list_tasks", "register_task"]
