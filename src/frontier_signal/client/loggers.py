"""Training loggers for `TrainingClient.train_epoch(..., loggers=[...])` (the tinker-cookbook
habit): each optimizer step's metrics go to every logger as `log(step, metrics)`.

- `JsonlLogger`: one JSON object per line in `metrics.jsonl`; no dependency, always available.
- `TensorBoardLogger`: scalars through `tensorboardX.SummaryWriter`, or
  `torch.utils.tensorboard.SummaryWriter` when only torch's is installed.
- `WandbLogger`: `wandb.log`, offline by default (`wandb sync` uploads the run later).
`setup_loggers(log_dir)` gives JSONL plus whichever of the others is installed.

This module imports neither torch nor the optional packages until a logger that needs them is
made; the SDK's base install stays torch-free. It does not talk to the server.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Protocol


class TrainingLogger(Protocol):
    """What `train_epoch` calls: `log` after each step, `flush` at the end of the epoch."""

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite values (TensorBoard and W&B plot only those)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


class JsonlLogger:
    """Append `{"step": N, "time": UNIX seconds, **metrics}` lines to `<log_dir>/metrics.jsonl`
    (or to `path` itself when it ends in `.jsonl`)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path if path.suffix == ".jsonl" else path / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(row, default=str) + "\n")
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def tensorboard_available() -> bool:
    if importlib.util.find_spec("tensorboardX") is not None:
        return True
    return (
        importlib.util.find_spec("torch") is not None
        and importlib.util.find_spec("tensorboard") is not None
    )


class TensorBoardLogger:
    """Scalars under `train/<name>` in a TensorBoard event file in `log_dir`.

    Raises:
        ImportError: neither tensorboardX nor torch + tensorboard is installed
            (`pip install tensorboardX`).
    """

    def __init__(self, log_dir: str | Path, prefix: str = "train/") -> None:
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError(
                    "TensorBoardLogger needs tensorboardX (`pip install tensorboardX`) or "
                    "torch with tensorboard installed"
                ) from None
        self._writer = SummaryWriter(str(self.log_dir))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for name, value in _scalars(metrics).items():
            self._writer.add_scalar(self.prefix + name, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """`wandb.log(metrics, step=step)` in a run of `project`, offline unless `mode` says
    otherwise (`"online"` needs `wandb login`).

    Raises:
        ImportError: wandb is not installed (`pip install wandb`).
    """

    def __init__(
        self,
        project: str,
        log_dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        mode: str = "offline",
        name: str | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError("WandbLogger needs wandb: `pip install wandb`") from None
        self._run = wandb.init(
            project=project,
            dir=str(log_dir) if log_dir is not None else None,
            config=config or {},
            mode=mode,
            name=name,
            reinit=True,
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._run.log(_scalars(metrics), step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._run.finish()


def setup_loggers(
    log_dir: str | Path,
    *,
    tensorboard: bool = True,
    wandb_project: str | None = None,
    config: dict[str, Any] | None = None,
) -> list[TrainingLogger]:
    """JSONL in `log_dir/metrics.jsonl`, plus TensorBoard when installed (and `tensorboard`),
    plus W&B (offline) when installed and `wandb_project` is given."""
    log_dir = Path(log_dir)
    loggers: list[TrainingLogger] = [JsonlLogger(log_dir)]
    if tensorboard and tensorboard_available():
        loggers.append(TensorBoardLogger(log_dir / "tensorboard"))
    if wandb_project and importlib.util.find_spec("wandb") is not None:
        loggers.append(WandbLogger(wandb_project, log_dir, config))
    return loggers
