"""Build settings: frozen dataclasses that check themselves and round-trip through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainConfig:
    """Supervised training (teacher, and the student trained from scratch)."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class DistillConfig:
    """Hinton distillation: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``."""

    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        _check(self.epochs >= 1, f"distill epochs must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"distill lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class PruneConfig:
    """Global L1 magnitude pruning of conv/linear weights, then a distillation fine-tune."""

    sparsity: float = 0.5
    finetune_epochs: int = 10
    lr: float = 1e-3

    def __post_init__(self) -> None:
        _check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _check(self.finetune_epochs >= 0,
               f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        _check(self.lr > 0, f"prune lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class QuantConfig:
    """Static INT8 post-training quantization."""

    calibration_samples: int = 200
    per_channel: bool = True

    def __post_init__(self) -> None:
        _check(self.calibration_samples >= 1,
               f"calibration_samples must be >= 1, got {self.calibration_samples}")


@dataclass(frozen=True)
class BenchConfig:
    """Each artifact: ``warmup`` untimed runs, then at least ``runs`` timed runs and at least
    ``seconds`` of timed runs (a microsecond model gets many more than ``runs``)."""

    warmup: int = 50
    runs: int = 300
    seconds: float = 1.0

    def __post_init__(self) -> None:
        _check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        _check(self.runs >= 10, f"runs must be >= 10 for percentiles to mean anything, "
                                f"got {self.runs}")
        _check(self.seconds >= 0, f"seconds must be >= 0, got {self.seconds}")


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    teacher: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, lr=1e-3))
    student: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=3e-3))
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    # Minimum top-1 agreement between an artifact and the PyTorch model it came from.
    min_agreement: float = 0.98

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_agreement <= 1.0,
               f"min_agreement must be in [0, 1], got {self.min_agreement}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BuildConfig:
        sections = {f.name: f.type for f in fields(cls)}
        nested = {"teacher": TrainConfig, "student": TrainConfig, "distill": DistillConfig,
                  "prune": PruneConfig, "quant": QuantConfig, "bench": BenchConfig}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r}; allowed: {', '.join(sections)}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in nested:
                allowed = [f.name for f in fields(nested[key])]
                bad = sorted(set(value) - set(allowed))
                if bad:
                    raise ValueError(f"unknown key {key}.{bad[0]!r}; allowed: {', '.join(allowed)}")
                values[key] = nested[key](**value)
            else:
                values[key] = value
        return cls(**values)
