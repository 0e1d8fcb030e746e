"""The annotation-driven settings check (edgekd/settings/typed.py): every wrong type or
non-finite number in a project file, ``--set``, a budget or a target is one ``error:`` line
naming the dotted key, what was expected and what was given, exit 2, before any work."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import UsageError
from edgekd.settings.budgets import Budget, parse_budget
from edgekd.settings.config import (
    BenchConfig,
    BuildConfig,
    DistillConfig,
    PruneConfig,
    QuantConfig,
    RobustnessConfig,
    TrainConfig,
)
from edgekd.settings.targets import parse_target
from edgekd.settings.typed import OneOf, from_table

runner = CliRunner()

# (what the user gives, the message after "error: <source>: "). A string is a --set item
# (source "built-in"); a tuple ("file", text) is an edgekd.toml; ("budget", text) a --budget.
CLI_CASES: list[tuple[str | tuple[str, str], str]] = [
    # The seven of the issue.
    ("seed=abc", "seed: expected an integer, got 'abc' (str)"),
    ("distill.epochs=3.5", "distill.epochs: expected an integer, got 3.5 (float)"),
    ("bench.warmup=lots", "bench.warmup: expected an integer, got 'lots' (str)"),
    ("bench.seconds=Infinity", "bench.seconds: expected a finite number, got inf (float)"),
    ("distill.lr=Infinity", "distill.lr: expected a finite number, got inf (float)"),
    (("file", '[prune]\nsparsity = "0.5"\n'),
     "prune.sparsity: expected a number, got '0.5' (str)"),
    (("file", '[robustness]\nnoise_sigmas = ["a"]\n'),
     "robustness.noise_sigmas[0]: expected a number, got 'a' (str)"),
    # Budgets: in the project file, per target, through --set and in a --budget file.
    (("file", "[budget]\nmax_size_kb = nan\n"),
     "budget.max_size_kb: expected a finite number, got nan (float)"),
    (("file", "[budget.x86-cpu]\nmax_p95_ms = -inf\n"),
     "budget.x86-cpu.max_p95_ms: expected a finite number, got -inf (float)"),
    ("budget.max_p95_ms=NaN", "budget.max_p95_ms: expected a finite number, got nan (float)"),
    (("budget", "[budget]\nmax_p95_ms = inf\n"),
     "budget.max_p95_ms: expected a finite number, got inf (float)"),
    (("file", "budget = 3\n"), "budget: expected a table, got 3 (int)"),
    (("file", "[budget]\nmax_p95 = 1\n"), "unknown key 'budget.max_p95'; allowed: "
     "max_size_kb, max_p95_ms, max_peak_rss_mb, max_accuracy_drop, min_int8_speedup"),
    # Other kinds of annotation.
    ("quant.max_accuracy_drop=-Infinity",
     "quant.max_accuracy_drop: expected a finite number, got -inf (float)"),
    ("baseline=1", "baseline: expected true or false, got 1 (int)"),
    ("prune.frequency=true", "prune.frequency: expected an integer, got True (bool)"),
    ("robustness.noise_sigmas=2",
     "robustness.noise_sigmas: expected a list of numbers, got 2 (int)"),
    ('runtimes="onnxruntime"', "runtimes: expected a list of strings, got 'onnxruntime' (str)"),
    ('runtimes=["coreml"]',
     "runtimes[0]: unknown runtime 'coreml'; allowed: onnxruntime, openvino, tflite"),
    ("student_model=big", "student_model: unknown student model 'big'; allowed: "
                          "student_cnn, student_convnet, student_tiny"),
    (("file", "seed = 1\nsead = 2\n"), "unknown key 'sead'; allowed: target, out, runtimes, "
                                       "model, data, budget, inputs, outputs, seed, teacher"),
    (("file", "model = 3\n"), "model: expected a table, got 3 (int)"),
    (("file", '[model]\nstudent = 3\n[data]\ntrain = "d.npz"\n'),
     "model.student: expected a string, got 3 (int)"),
    (("file", '[model]\nonnx = "m.onnx"\n[data]\ntest = "d.npz"\nmean = "a"\n'),
     "data.mean: expected a number or a list of numbers, got 'a' (str)"),
    (("file", '[model]\nonnx = "m.onnx"\n[data]\ntest = "d.npz"\nimage_size = [96]\n'),
     "data.image_size: expected a list of 2 integers, got [96] (list)"),
]


def _case_id(case: tuple[str | tuple[str, str], str]) -> str:
    given = case[0]
    return given if isinstance(given, str) else f"{given[0]}:{given[1].strip()}"


@pytest.mark.parametrize("given, message", CLI_CASES, ids=[_case_id(c) for c in CLI_CASES])
def test_bad_setting_is_one_line_and_exit_2_before_any_work(
        given: str | tuple[str, str], message: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no edgekd.toml of the repository's is picked up
    args = ["build", "--target", "x86-cpu", "--out", str(tmp_path / "out")]
    source = "built-in"
    if isinstance(given, str):
        args += ["--set", given]
        # A value from --set is blamed on the item, which names the key.
        source, message = f"--set {given}", message.removeprefix(f"{given.partition('=')[0]}: ")
    else:
        kind, text = given
        path = tmp_path / ("edgekd.toml" if kind == "file" else "budget.toml")
        path.write_text(text, encoding="utf-8")
        args += ["--config" if kind == "file" else "--budget", str(path)]
        source = str(path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"error: {source}: {message}"), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


# A dataclass with one field of every annotation the checker knows.
@dataclass(frozen=True)
class Inner:
    n: int = 1


@dataclass(frozen=True)
class Sample:
    count: int = 0
    ratio: float = 0.5
    flag: bool = False
    name: str = "x"
    limit: float | None = None
    sizes: tuple[int, ...] = ()
    shape: tuple[int, int] | None = None
    mixed: tuple[str, float] = ("a", 1.0)
    args: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    color: Annotated[str, OneOf(("red", "green"), "color")] = "red"
    mean: float | tuple[float, ...] = 0.0
    anything: Any = None


@dataclass(frozen=True)
class Named:
    name: str
    size: int


@pytest.mark.parametrize("raw, expected", [
    ({"count": 3}, Sample(count=3)),
    ({"ratio": 2}, Sample(ratio=2.0)),
    ({"flag": True, "name": "y"}, Sample(flag=True, name="y")),
    ({"limit": None}, Sample()),
    ({"limit": 1.5}, Sample(limit=1.5)),
    ({"sizes": [1, 2, 3]}, Sample(sizes=(1, 2, 3))),
    ({"shape": [4, 5]}, Sample(shape=(4, 5))),
    ({"mixed": ["b", 2]}, Sample(mixed=("b", 2.0))),
    ({"args": {"k": [1, "two"]}}, Sample(args={"k": [1, "two"]})),
    ({"inner": {"n": 7}}, Sample(inner=Inner(7))),
    ({"inner": {}}, Sample()),
    ({"color": "green"}, Sample(color="green")),
    ({"mean": 1}, Sample(mean=1.0)),
    ({"mean": [1, 0.5]}, Sample(mean=(1.0, 0.5))),
    ({"anything": {"x": object}}, Sample(anything={"x": object})),
])
def test_values_are_converted_to_their_annotations(raw: dict[str, Any],
                                                  expected: Sample) -> None:
    got = from_table(Sample, raw, "s")
    assert got == expected
    for name in raw:  # the converted types, not only equal values (1 == 1.0)
        assert type(getattr(got, name)) is type(getattr(expected, name)), name


@pytest.mark.parametrize("raw, message", [
    ({"count": True}, "s.count: expected an integer, got True (bool)"),
    ({"count": 3.5}, "s.count: expected an integer, got 3.5 (float)"),
    ({"count": 2.0}, "s.count: expected an integer, got 2.0 (float)"),
    ({"count": "3"}, "s.count: expected an integer, got '3' (str)"),
    ({"count": None}, "s.count: expected an integer, got None (NoneType)"),
    ({"ratio": "0.5"}, "s.ratio: expected a number, got '0.5' (str)"),
    ({"ratio": False}, "s.ratio: expected a number, got False (bool)"),
    ({"ratio": float("nan")}, "s.ratio: expected a finite number, got nan (float)"),
    ({"ratio": float("-inf")}, "s.ratio: expected a finite number, got -inf (float)"),
    ({"ratio": 10 ** 400}, "s.ratio: expected a finite number, got 1000000000"),
    ({"flag": 1}, "s.flag: expected true or false, got 1 (int)"),
    ({"flag": "yes"}, "s.flag: expected true or false, got 'yes' (str)"),
    ({"name": 5}, "s.name: expected a string, got 5 (int)"),
    ({"limit": float("inf")}, "s.limit: expected a finite number, got inf (float)"),
    ({"limit": "none"}, "s.limit: expected a number, got 'none' (str)"),
    ({"sizes": "123"}, "s.sizes: expected a list of integers, got '123' (str)"),
    ({"sizes": 3}, "s.sizes: expected a list of integers, got 3 (int)"),
    ({"sizes": [1, "2"]}, "s.sizes[1]: expected an integer, got '2' (str)"),
    ({"shape": [4]}, "s.shape: expected a list of 2 integers, got [4] (list)"),
    ({"shape": [4, 5.5]}, "s.shape[1]: expected an integer, got 5.5 (float)"),
    ({"mixed": ["a"]}, "s.mixed: expected a list of 2 items (a string, a number), got ['a']"),
    ({"args": [1]}, "s.args: expected a table, got [1] (list)"),
    ({"inner": 3}, "s.inner: expected a table, got 3 (int)"),
    ({"inner": {"n": "7"}}, "s.inner.n: expected an integer, got '7' (str)"),
    ({"inner": {"m": 1}}, "unknown key 's.inner.m'; allowed: n"),
    ({"color": "blue"}, "s.color: unknown color 'blue'; allowed: red, green"),
    ({"color": 1}, "s.color: expected one of red, green, got 1 (int)"),
    ({"mean": "a"}, "s.mean: expected a number or a list of numbers, got 'a' (str)"),
    ({"mean": ["a"]}, "s.mean[0]: expected a number, got 'a' (str)"),
    ({"mean": float("nan")}, "s.mean: expected a finite number, got nan (float)"),
    ({"cont": 1, "colour": 2}, "unknown keys 's.cont', 's.colour'; allowed: count, ratio, "),
])
def test_each_mismatch_is_one_line_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        from_table(Sample, raw, "s")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(ValueError) as caught:
        from_table(Sample, {"name": list(range(1000))})
    text = str(caught.value)
    assert text.startswith("name: expected a string, got [0, 1, 2,") and len(text) < 120
    assert text.endswith("... (list)")


def test_required_and_fixed_fields() -> None:
    assert from_table(Named, {"size": 2}, fixed={"name": "n"}) == Named("n", 2)
    with pytest.raises(ValueError, match="missing key 'size'"):
        from_table(Named, {}, fixed={"name": "n"})
    with pytest.raises(ValueError, match="unknown key 'name'; allowed: size"):
        from_table(Named, {"name": "m", "size": 2}, fixed={"name": "n"})
    with pytest.raises(ValueError, match=r"^expected a table, got \[\] \(list\)$"):
        from_table(Named, [])


def test_an_annotation_without_a_check_is_a_bug_not_user_input() -> None:
    @dataclass
    class Odd:
        when: set[int]

    with pytest.raises(TypeError, match="no check for the annotation"):
        from_table(Odd, {"when": [1]})


def test_post_init_range_checks_run_on_the_converted_values() -> None:
    with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got 1.5$"):
        BuildConfig.from_dict({"prune": {"sparsity": 1.5}})
    with pytest.raises(ValueError, match="pairs must be"):
        BuildConfig.from_dict({"distill": {"pairs": [["a"]]}})
    with pytest.raises(ValueError, match=r"^distill.pairs\[0\]\[1\]: expected a string, got 2"):
        BuildConfig.from_dict({"distill": {"pairs": [["a", 2]]}})


def test_config_round_trips_through_json() -> None:
    config = BuildConfig(
        seed=7, teacher=TrainConfig(epochs=3, lr=0.01, batch_size=8),
        student=TrainConfig(epochs=4), baseline=False, min_agreement=0.9, min_cosine=-0.5,
        distill=DistillConfig(temperature=2.5, alpha=0.3, pairs=(("a", "b"), ("c", "d")),
                              views=2, mixup=0.0),
        prune=PruneConfig(method="structured", sparsity=0.25, finetune_epochs=0),
        quant=QuantConfig(method="percentile", per_channel=False, max_accuracy_drop=None),
        bench=BenchConfig(warmup=0, runs=10, seconds=0.0), student_model="student_tiny",
        robustness=RobustnessConfig(noise_sigmas=(1.0, 2.5), corruptions=("blur",)))
    again = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.distill.pairs == (("a", "b"), ("c", "d"))  # tuples again, hashable
    assert BuildConfig.from_dict(json.loads(json.dumps(BuildConfig().to_dict()))) == BuildConfig()
    budget = Budget(max_size_kb=64.0, min_int8_speedup=1.5)
    assert parse_budget(json.loads(json.dumps(budget.to_dict())), "b") == budget


def test_budgets_and_targets_refuse_non_finite_numbers() -> None:
    with pytest.raises(UsageError, match=r"^b.toml: budget.max_size_kb: expected a finite "
                                         r"number, got nan \(float\)$"):
        parse_budget({"max_size_kb": float("nan")}, "b.toml")
    with pytest.raises(UsageError, match=r"^b.toml: budget max_p95_ms must be >= 0, got -1.0$"):
        parse_budget({"max_p95_ms": -1}, "b.toml")
    text = 'description = "x"\nruntimes = ["onnxruntime"]\nthreads = 2\n'
    with pytest.raises(UsageError, match=r"^t.toml: budget.max_p95_ms: expected a finite "
                                         r"number, got inf \(float\)$"):
        parse_target("t", text + "[budget]\nmax_p95_ms = inf\n", "t.toml")
    with pytest.raises(UsageError, match=r"^t.toml: threads: expected an integer, got 2.0 "):
        parse_target("t", text.replace("threads = 2", "threads = 2.0"), "t.toml")
    with pytest.raises(UsageError, match=r"^t.toml: providers\[0\]: expected a string, got 1"):
        parse_target("t", text + "providers = [1]\n", "t.toml")
