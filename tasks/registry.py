"""The task registry: `@register_task("name")` on a factory `(params: SomeTaskParams) -> Task`."""

from __future__ import annotations

from typing import Any

from slimbench.core.registry import Registry, parse_params
from slimbench.tasks.base import Task

TASKS: Registry[Any] = Registry("task")
register_task = TASKS.register


def build_task(name: str, params: dict[str, Any] | None = None) -> Task:
    factory = TASKS.get(name)
    return factory(parse_params(TASKS, name, params))


def list_tasks(pattern: str = "*") -> list[str]:
    return TASKS.names(pattern)
