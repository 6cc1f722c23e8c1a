"""Weights & Biases logging: offline by default (no key, no network), online on request."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from slimbench.core.errors import ConfigError

Mode = Literal["offline", "online", "disabled"]
MODES: tuple[Mode, ...] = ("offline", "online", "disabled")


class Tracker:
    """Opens one W&B run per cell (and per baseline training), all grouped by suite."""

    def __init__(self, mode: str, root: Path, project: str, group: str):
        if mode not in MODES:
            raise ConfigError(f"unknown W&B mode {mode!r}; valid modes: {', '.join(MODES)}")
        if mode == "online" and not _has_wandb_key():
            raise ConfigError(
                "W&B online mode needs an API key: run `wandb login` or set WANDB_API_KEY, "
                "or use `--wandb offline` (the default) and `wandb sync` the runs later"
            )
        self.mode, self.root, self.project, self.group = mode, Path(root), project, group
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")

    @contextlib.contextmanager
    def run(self, name: str, job_type: str, config: dict[str, Any], tags: list[str]) -> Iterator[Any]:
        if self.mode == "disabled":  # no W&B at all: works where wandb is not installed
            yield _NullRun()
            return
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)   # only when a run is really logged (not on --dry-run)
        run = wandb.init(
            project=self.project, group=self.group, name=name, job_type=job_type, config=config,
            tags=[t[:64] for t in tags], dir=str(self.root), mode=self.mode, reinit="create_new",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        try:
            yield run
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()

    def lightning_logger(self, run: Any) -> Any:
        """A Lightning logger writing into an open run, so fine-tuning curves land in the cell's run."""
        if self.mode == "disabled":
            return False
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(experiment=run)

    @staticmethod
    def describe(run: Any) -> dict[str, Any]:
        if run is None or getattr(run, "disabled", False) or not getattr(run, "dir", None):
            return {"mode": "disabled"}
        return {"mode": run.settings.mode, "id": run.id, "path": run.path if run.settings.mode == "online" else None,
                "dir": str(Path(run.dir).parent)}


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class _NullRun:
    """What a disabled tracker hands out: accepts logs and summaries and keeps nothing."""

    disabled, dir = True, None

    def __init__(self) -> None:
        self.summary: dict[str, Any] = {}

    def log(self, _metrics: dict[str, Any]) -> None:
        pass
