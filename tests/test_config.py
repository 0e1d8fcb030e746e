from __future__ import annotations

import json

import pytest

from edgekd.settings.config import BuildConfig, DistillConfig, PruneConfig


def test_config_round_trips_through_json() -> None:
    config = BuildConfig(seed=3, distill=DistillConfig(temperature=2.0, alpha=0.3))
    again = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("make, message", [
    (lambda: DistillConfig(temperature=0), "temperature must be > 0"),
    (lambda: DistillConfig(alpha=1.5), r"alpha must be in \[0, 1\]"),
    (lambda: PruneConfig(sparsity=1.0), r"sparsity must be in \[0, 1\)"),
    (lambda: BuildConfig(min_agreement=2), "min_agreement"),
    (lambda: BuildConfig.from_dict({"sead": 1}), "unknown key 'sead'; allowed: seed, "),
    (lambda: BuildConfig.from_dict({"prune": {"sparse": 0.1}}),
     "unknown key 'prune.sparse'; allowed: method, schedule, sparsity"),
])
def test_bad_values_say_what_is_allowed(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()


def test_a_partial_section_keeps_the_builds_own_defaults() -> None:
    """`[student] epochs = 2` changes the epochs only: the student's lr stays BuildConfig's
    3e-3 (not TrainConfig's 1e-3), and other sections stay as they were."""
    config = BuildConfig.from_dict({"student": {"epochs": 2}, "prune": {"method": "structured"}})
    assert config.student.epochs == 2 and config.student.lr == BuildConfig().student.lr == 3e-3
    assert config.prune.schedule == "oneshot"
    assert config.teacher == BuildConfig().teacher
