"""A bounded, seeded run of benchmarks/fuzz_bad_input.py: random and malformed settings,
`edgekd check` reports and budgets, and data sources, each through the real CLI in its own
process. None may end in a traceback, a hang, a bad exit (another code, more than one
`error:` line, a child left behind) or a file touched outside the output folder."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from benchmarks.fuzz_bad_input import (
    BAD,
    Case,
    Outcome,
    classify,
    clearly_invalid,
    describe,
    dump_toml,
    fuzz,
    generate,
    setting_keys,
    table,
)

CASES = 30  # per family; the first 40 rounds of `fuzz_bad_input.py --seed 0 --cases N`
SEED = 0
TIMEOUT = 120.0  # seconds per case; a finished 64->8->10 MLP builds in about 10


def test_every_setting_is_fuzzed() -> None:
    """The keys come from the dataclasses: a new setting is fuzzed without editing the
    fuzzer."""
    from edgekd.settings.budgets import KEYS
    from edgekd.settings.config import config_schema
    from edgekd.settings.project import DataSpec, ModelSpec

    keys = setting_keys()
    expected = {k if not s else f"{s}.{k}" for s, names in config_schema().items()
                for k in names}
    expected |= {f"model.{f.name}" for f in dataclasses.fields(ModelSpec)}
    expected |= {f"data.{f.name}" for f in dataclasses.fields(DataSpec)}
    expected |= {f"budget.{k}" for k in KEYS} | {"target", "out", "runtimes"}
    assert expected <= set(keys)
    assert keys["distill.alpha"] == {"int", "float"} and keys["data.image_size"] == {
        "list", "none"}


def test_the_fuzzer_judges_values_and_outcomes() -> None:
    kinds = setting_keys()
    assert clearly_invalid("distill.alpha", kinds["distill.alpha"], math.nan)
    assert clearly_invalid("bench.runs", kinds["bench.runs"], -1)
    assert clearly_invalid("data.test", kinds["data.test"], "../outside/data.npz")
    assert not clearly_invalid("data.mean", kinds["data.mean"], -0.5)
    case = Case("settings", "x", lambda p: [], invalid=True)
    assert classify(case, 2, "", "error: bad\n", False, []) == "good-error"
    assert classify(case, 2, "", "warning\nerror: bad\n", False, []) == "bad-exit"
    assert classify(case, 1, "", "Traceback (most recent call last):\n", False, []) == \
        "traceback"
    assert classify(case, 0, "", "", False, []) == "silent-accept"
    assert classify(case, 0, "", "", False, ["p/models.pyc"]) == "touched-outside"
    assert classify(case, -9, "", "", True, []) == "hang"
    assert "nan" in dump_toml({"a": math.nan, "t": {"b": [1, "x"]}})


def test_the_cases_are_seeded() -> None:
    names = [c.name for c in generate("settings", 10, SEED)]
    assert names == [c.name for c in generate("settings", 10, SEED)]
    assert names[:5] == [c.name for c in generate("settings", 5, SEED)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    return fuzz(cases=CASES, seed=SEED, timeout=TIMEOUT,
                work=Path(tmp_path_factory.mktemp("fuzz")))


@pytest.mark.slow
@pytest.mark.parametrize("outcome", [c for c in BAD if c != "silent-accept"])
def test_no_bad_outcome(outcomes: list[Outcome], outcome: str) -> None:
    bad = [o for o in outcomes if o.outcome == outcome]
    assert not bad, f"{len(bad)} case(s) ended as {outcome}:\n{table(outcomes)}\n\n" + \
        "\n\n".join(describe(o, lines=6) for o in bad)
