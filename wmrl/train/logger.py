"""Run metrics: always a local JSONL file in the run folder; Weights & Biases only when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wmrl.errors import UserError


class MetricsLog:
    """Appends one JSON object per row to <run>/metrics.jsonl (and to wandb if enabled)."""

    def __init__(self, run_dir: Path, use_wandb: bool = False, config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = None
        if use_wandb:
            try:
                import wandb
            except ModuleNotFoundError:
                raise UserError("wandb logging needs the wandb package: pip install 'wmrl[wandb]'") from None
            self.wandb = wandb.init(project="wmrl", dir=str(run_dir), config=config, resume="allow")

    def log(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, step=row.get("step"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (a resumed run logs them again)."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
