"""Robustness for any project: corruptions per input kind in raw units (RGB images, 1-D
signals, token ids), figures for classifiers and regressors, with or without labels, the
reason when nothing applies, and the report's rendering of all of it."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.inputs.dataset import Dataset, InputSpec, OutputSpec, Preprocessing, Split
from edgekd.measure.corrupt import delayed, model_input, raw_of, signal_noise, token_dropout
from edgekd.measure.robustness import artifact_predictor, measure_robustness
from edgekd.report.html import _robustness as html_robustness
from edgekd.report.markdown import _robustness as md_robustness
from edgekd.report.schema import report_schema, validate
from edgekd.settings.config import BuildConfig, RobustnessConfig

Arrays = Mapping[str, np.ndarray]


def _dataset(x: np.ndarray, y: np.ndarray | None, prep: Preprocessing, *,
             num_classes: int | None, inputs: tuple[InputSpec, ...] = (),
             extra: dict[str, np.ndarray] | None = None, n_test: int | None = None,
             outputs: tuple[OutputSpec, ...] = ()) -> Dataset:
    n = len(x)
    cut = n // 2 if n_test is None else n - n_test
    idx = np.arange(n)

    def split(sl: slice) -> Split:
        return Split(x[sl], None if y is None else y[sl], idx[sl],
                     {k: v[sl] for k, v in (extra or {}).items()})

    train, test = split(slice(0, cut)), split(slice(cut, n))
    return Dataset(name="test", train=train, test=test, calibration=train, preprocessing=prep,
                   num_classes=num_classes, seed=0, inputs=inputs, outputs=outputs)


def _train(model: nn.Module, inputs: list[torch.Tensor], y: torch.Tensor,
           steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(*inputs), y).backward()
        opt.step()
    return model.eval()


def _schema_ok(rob: dict[str, object]) -> None:
    json.dumps(rob)  # goes into report.json as is
    schema = {"$defs": report_schema()["$defs"], "$ref": "#/$defs/robustness"}
    assert validate(rob, schema) == []


def _rendered(rob: dict[str, object]) -> str:
    return "\n".join(md_robustness({"robustness": rob})) + html_robustness({"robustness": rob})


# -- RGB images ---------------------------------------------------------------------------


class Residual(nn.Module):
    """Not an nn.Sequential: a conv, a residual block, pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))


@pytest.fixture(scope="module")
def rgb() -> tuple[Dataset, nn.Module]:
    # 8-bit RGB images whose class is the brightest channel.
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 3, n)
    raw = rng.integers(0, 200, (n, 3, 12, 12))
    raw[np.arange(n), y] += 30
    prep = Preprocessing(scale=1 / 255, mean=(0.5, 0.45, 0.4), std=(0.25, 0.2, 0.3),
                         raw="images, pixels 0..255, [C, H, W]")
    data = _dataset(prep.apply(raw), y.astype(np.int64), prep, num_classes=3)
    model = _train(Residual(), [torch.from_numpy(data.train.x)], torch.from_numpy(data.train.y))
    return data, model


def _torch(model: nn.Module, *names: str):  # type: ignore[no-untyped-def]
    """A PyTorch model as the callable measure_robustness takes: data inputs by name."""
    def predict(arrays: Arrays) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(arrays[n]) for n in names)).numpy()
    return predict


def test_rgb_images_are_corrupted_in_raw_pixels_with_the_default_sigmas(rgb) -> None:  # type: ignore[no-untyped-def]
    data, model = rgb
    raw = raw_of(data.test.x, data.preprocessing)
    assert raw.min() >= 0 and raw.max() <= 255 and (raw == np.round(raw)).all()
    np.testing.assert_array_equal(model_input(raw, data.preprocessing, np.dtype("float32")),
                                  data.test.x)  # undone and redone exactly
    models = {"teacher": _torch(model, "input")}
    out = measure_robustness(data, RobustnessConfig(), models, seed=0)
    _schema_ok(out)
    names = [c["name"] for c in out["conditions"]]
    assert out["metric"] == "accuracy" and out["models"] == ["teacher"]
    # Default sigmas: 1/8, 1/4, 1/2 of the pixel range the test images span (0..max).
    top = float(raw.max())
    assert names == ["clean", f"noise_sigma_{top / 8:g}", f"noise_sigma_{top / 4:g}",
                     f"noise_sigma_{top / 2:g}", "dropout", "shift"]
    assert all(c["kind"] == "image" and c["input"] == "input" for c in out["conditions"][1:])
    acc = {c["name"]: c["accuracy"]["teacher"] for c in out["conditions"]}
    assert all(0.0 <= a <= 1.0 for a in acc.values())
    clean = float((model(torch.from_numpy(data.test.x)).argmax(1).numpy()
                   == data.test.y).mean())
    assert acc["clean"] == pytest.approx(clean) and clean > 0.9
    assert acc[names[3]] < clean  # half the pixel range of noise hurts
    noisy = out["conditions"][1]
    assert noisy["sigma_raw"] == pytest.approx(top / 8)
    assert noisy["sigma_normalised"] is None  # three channels, three different stds
    assert out["pixel_units"].startswith(f"raw pixels 0..{top:g}")
    again = measure_robustness(data, RobustnessConfig(), models, seed=0)
    assert again == out
    other = measure_robustness(data, RobustnessConfig(), models, seed=1)
    assert [c["accuracy"] for c in other["conditions"]] != \
        [c["accuracy"] for c in out["conditions"]]
    text = _rendered(out)
    assert "noise_sigma" in text and "Robustness: test accuracy" in text


def test_without_labels_a_classifier_is_judged_by_agreement_with_itself(rgb) -> None:  # type: ignore[no-untyped-def]
    data, model = rgb
    unlabeled = _dataset(np.concatenate([data.train.x, data.test.x]), None,
                         data.preprocessing, num_classes=3)
    models = {"student_scratch": _torch(model, "input"),
              "student_distilled": _torch(model, "input")}
    out = measure_robustness(unlabeled, RobustnessConfig(noise_sigmas=(20.0,),
                                                         corruptions=("blur",)), models, seed=0)
    _schema_ok(out)
    assert out["metric"] == "agreement"
    assert out["conditions"][0]["agreement"] == {"student_scratch": 1.0, "student_distilled": 1.0}
    assert all(0.0 <= v <= 1.0 for c in out["conditions"] for v in c["agreement"].values())
    assert out["summary"]["distilled_more_accurate"] == 0  # the same model twice: all tied
    assert "agreement" in "\n".join(md_robustness({"robustness": out}))


# -- 1-D signals --------------------------------------------------------------------------


def test_signal_corruptions_in_raw_units() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(64)
    x = 3.0 + np.sin(t / 3.0)[None, None, :] * np.ones((500, 2, 1))
    noisy = signal_noise(x, 10.0, rng)
    rms = np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean())
    assert (noisy - x).std() == pytest.approx(rms / 10 ** 0.5, rel=0.02)  # 10 dB below it
    moved = delayed(x, 6)
    np.testing.assert_array_equal(moved[..., 6:], x[..., :-6])
    assert (moved[..., :6] == 0).all()  # zero-padded, nothing wraps


@pytest.fixture(scope="module")
def signals() -> tuple[Dataset, nn.Module]:
    # Two-channel 64-sample signals: a slow or a fast sine, plus noise; raw units are volts.
    rng = np.random.default_rng(1)
    n = 200
    y = rng.integers(0, 2, n)
    t = np.arange(64)
    freq = np.where(y == 1, 0.6, 0.15)[:, None, None]
    raw = np.sin(freq * t + rng.uniform(0, 6, (n, 2, 1))) * 2.0 + rng.normal(0, 0.2, (n, 2, 64))
    prep = Preprocessing(scale=1.0, mean=0.0, std=2.0, layout="as given", raw="volts [C, T]")
    data = _dataset(prep.apply(raw), y.astype(np.int64), prep, num_classes=2)
    model = nn.Sequential(nn.Conv1d(2, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 8, 5, padding=2),
                          nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 2))
    return data, _train(model, [torch.from_numpy(data.train.x)], torch.from_numpy(data.train.y))


def test_signal_classifier_gets_noise_gain_and_time_shift_conditions(signals) -> None:  # type: ignore[no-untyped-def]
    data, model = signals
    assert data.input_specs[0].kind == "signal"
    models = {"teacher": _torch(model, "input"), "student_distilled": _torch(model, "input")}
    out = measure_robustness(data, RobustnessConfig(), models, seed=0)
    _schema_ok(out)
    names = [c["name"] for c in out["conditions"]]
    assert names == ["clean", "snr_20db", "snr_10db", "gain_0.5", "gain_2", "time_shift_0.1"]
    rows = {c["name"]: c for c in out["conditions"]}
    assert {c.get("kind") for c in out["conditions"][1:]} == {"signal"}
    assert rows["time_shift_0.1"]["shift_samples"] == 6 and rows["snr_10db"]["snr_db"] == 10
    assert rows["clean"]["accuracy"]["teacher"] > 0.9
    assert all(0.0 <= v <= 1.0 for c in out["conditions"] for v in c["accuracy"].values())
    assert "summary" not in out  # only one student
    assert measure_robustness(data, RobustnessConfig(), models, seed=0) == out
    text = _rendered(out)
    assert "snr_20db" in text and "time_shift_0.1" in text


def test_two_corrupted_inputs_name_the_input_in_each_condition() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(
        np.float32)
    specs = (InputSpec("a", "float32", (16,), kind="signal"),
             InputSpec("b", "float32", (16,), kind="signal"))
    data = _dataset(a, None, Preprocessing(1.0, 0.0, 1.0, layout="as given"), num_classes=None,
                    inputs=specs, extra={"a": a, "b": b})
    seen: list[tuple[bool, bool]] = []

    def model(arrays: Arrays) -> np.ndarray:
        clean_a = np.array_equal(arrays["a"], data.test.extra["a"])
        clean_b = np.array_equal(arrays["b"], data.test.extra["b"])
        seen.append((clean_a, clean_b))
        return np.stack([arrays["a"].sum(1), arrays["b"].sum(1)], 1)

    out = measure_robustness(data, RobustnessConfig(signal_gains=(2.0,), signal_snr_db=(),
                                                    signal_shifts=()), {"m": model}, seed=0)
    _schema_ok(out)
    assert [(c["name"], c.get("input")) for c in out["conditions"]] == [
        ("clean", None), ("a/gain_2", "a"), ("b/gain_2", "b")]
    assert seen == [(True, True), (False, True), (True, False)]  # one input at a time
    assert out["metric"] == "relative_deviation"
    dev = {c["name"]: c["relative_deviation"]["m"] for c in out["conditions"]}
    # Doubling one of two independent outputs: ||x|| / sqrt(||x||^2 + ||y||^2) ~ 1/sqrt(2).
    assert dev["clean"] == 0.0 and 0.5 < dev["a/gain_2"] < 0.9
    text = _rendered(out)
    assert "a (signal)" in text


# -- token ids ----------------------------------------------------------------------------


class BagOfTokens(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


@pytest.fixture(scope="module")
def tokens() -> tuple[Dataset, nn.Module]:
    # Sentences of ids 1..49 padded with 0; the class: are there more ids above 25 than below.
    rng = np.random.default_rng(3)
    n, length = 300, 12
    lengths = rng.integers(4, length + 1, n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 50, (n, length)) * mask
    y = (((ids > 25) & (mask == 1)).sum(1) * 2 > lengths).astype(np.int64)
    specs = (InputSpec("input_ids", "int64", (length,), kind="tokens"),
             InputSpec("attention_mask", "int64", (length,), kind="mask"))
    data = _dataset(ids, y, Preprocessing(1.0, 0.0, 1.0, layout="as given"), num_classes=2,
                    inputs=specs, extra={"input_ids": ids, "attention_mask": mask})
    model = _train(BagOfTokens(50), [torch.from_numpy(data.train.extra["input_ids"]),
                                     torch.from_numpy(data.train.extra["attention_mask"])],
                   torch.from_numpy(data.train.y), steps=150)
    return data, model


def test_token_model_gets_dropout_and_replacement_and_the_mask_is_left_alone(tokens) -> None:  # type: ignore[no-untyped-def]
    data, model = tokens
    masks: list[np.ndarray] = []
    ids_seen: list[np.ndarray] = []
    torch_model = _torch(model, "input_ids", "attention_mask")

    def watched(arrays: Arrays) -> np.ndarray:
        masks.append(arrays["attention_mask"])
        ids_seen.append(arrays["input_ids"])
        return torch_model(arrays)

    out = measure_robustness(data, RobustnessConfig(), {"teacher": watched}, seed=0)
    _schema_ok(out)
    assert [(c["name"], c.get("kind"), c.get("input")) for c in out["conditions"]] == [
        ("clean", None, None), ("token_dropout_0.1", "tokens", "input_ids"),
        ("token_replace_0.1", "tokens", "input_ids")]
    assert out["not_corrupted"] == [
        "attention_mask is a mask input (no corruption is defined for it)"]
    for m in masks:
        np.testing.assert_array_equal(m, data.test.extra["attention_mask"])
    clean_ids = data.test.extra["input_ids"]
    for ids in ids_seen:
        assert ids.dtype == np.int64
        assert (ids[clean_ids == 0] == 0).all()  # padding stays padding
        assert ids.min() >= 0 and ids.max() <= clean_ids.max()  # the vocabulary seen
    dropped = ids_seen[1]
    changed = (dropped != clean_ids)[clean_ids != 0]
    assert 0.05 < changed.mean() < 0.15 and (dropped[dropped != clean_ids] == 0).all()
    acc = {c["name"]: c["accuracy"]["teacher"] for c in out["conditions"]}
    assert acc["clean"] > 0.8 and all(0.0 <= a <= 1.0 for a in acc.values())
    assert measure_robustness(data, RobustnessConfig(), {"teacher": torch_model}, seed=0) == out
    text = _rendered(out)
    assert "token_dropout_0.1" in text and "attention_mask is a mask input" in text


def test_token_dropout_uses_the_configured_pad_id() -> None:
    ids = np.array([[5, 6, 7, 1]] * 200, dtype=np.int64)
    out = token_dropout(ids, 0.5, 1, np.random.default_rng(0))
    assert out.dtype == np.int64 and set(np.unique(out)) == {1, 5, 6, 7}
    assert 0.4 < (out[:, :3] == 1).mean() < 0.6


def test_token_model_in_onnx_runtime_with_two_inputs(tokens, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, model = tokens
    path = tmp_path / "tokens.onnx"
    ids = torch.from_numpy(data.test.extra["input_ids"][:4])
    mask = torch.from_numpy(data.test.extra["attention_mask"][:4])
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (ids, mask), str(path), dynamo=True,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}})
    runtime = artifact_predictor(path, "onnxruntime", 1, specs=data.input_specs)
    cfg = RobustnessConfig()
    got = measure_robustness(data, cfg, {"onnx": runtime}, seed=0)
    want = measure_robustness(data, cfg, {"onnx": _torch(model, "input_ids", "attention_mask")},
                              seed=0)
    n = len(data.test)
    for a, b in zip(got["conditions"], want["conditions"], strict=True):
        assert abs(a["accuracy"]["onnx"] - b["accuracy"]["onnx"]) <= 1 / n


# -- regressors and nothing to corrupt ----------------------------------------------------


def test_signal_regressor_with_labels_is_judged_by_rmse() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 32)).astype(np.float32)
    y = x.mean(1, keepdims=True).astype(np.float32)
    data = _dataset(x, y, Preprocessing(1.0, 0.0, 1.0, layout="as given"), num_classes=None)
    out = measure_robustness(data, RobustnessConfig(signal_snr_db=(), signal_shifts=()),
                             {"mean": lambda a: a["input"].mean(1, keepdims=True)}, seed=0)
    _schema_ok(out)
    rmse = {c["name"]: c["rmse"]["mean"] for c in out["conditions"]}
    assert out["metric"] == "rmse" and rmse["clean"] == pytest.approx(0.0, abs=1e-6)
    expected = float(np.sqrt(((y[30:] * 1.0) ** 2).mean()))  # gain 2 doubles: error = y
    assert rmse["gain_2"] == pytest.approx(expected, rel=1e-4)
    assert "RMSE" in "\n".join(md_robustness({"robustness": out}))


def test_values_only_regression_is_skipped_with_the_reason() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    specs = (InputSpec("features", "float32", (5,), kind="values"),)
    data = _dataset(x, x.sum(1), Preprocessing(1.0, 0.0, 1.0, layout="as given"),
                    num_classes=None, inputs=specs, outputs=(OutputSpec("y"),))
    out = measure_robustness(data, RobustnessConfig(), {"m": lambda a: a["features"].sum(1)},
                             seed=0)
    assert out == {"skipped": "no input can be corrupted: features is a values input (no "
                              "corruption is defined for it)"}
    _schema_ok(out)
    text = _rendered(out)
    assert "Not measured: no input can be corrupted" in text


def test_nothing_to_measure_says_why() -> None:
    x = np.zeros((4, 1, 4, 4), np.float32)
    data = _dataset(x, np.zeros(4, np.int64), Preprocessing(1.0, 0.0, 1.0), num_classes=2,
                    n_test=0)
    assert measure_robustness(data, RobustnessConfig(), {"m": lambda a: a}, seed=0) == {
        "skipped": "the test split has no samples"}
    data = _dataset(x, np.zeros(4, np.int64), Preprocessing(1.0, 0.0, 1.0), num_classes=2)
    off = RobustnessConfig(noise_sigmas=(), corruptions=())
    out = measure_robustness(data, off, {"m": lambda a: a["input"].reshape(len(x) // 2, -1)},
                             seed=0)
    assert out["skipped"].startswith("no input can be corrupted: input: no image corruption "
                                     "is configured (robustness.noise_sigmas and")


def test_new_settings_round_trip_and_refuse_bad_values() -> None:
    config = BuildConfig(robustness=RobustnessConfig(signal_snr_db=[30, 0], token_pad_id=3,
                                                     token_replace=()))  # type: ignore[arg-type]
    again = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.robustness.signal_snr_db == (30.0, 0.0)
    assert again.robustness.noise_sigmas is None
    for kwargs, message in [({"token_dropout": (1.5,)}, "token_dropout must be in [0, 1]"),
                            ({"signal_gains": (-1.0,)}, "signal_gains must be finite and >= 0"),
                            ({"signal_shifts": 0.1}, "signal_shifts must be a list"),
                            ({"token_pad_id": -1}, "token_pad_id must be an integer >= 0"),
                            ({"signal_snr_db": (10.0, 10.0)}, "signal_snr_db has duplicates")]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            RobustnessConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="robustness.signal_gains"):
        BuildConfig.from_dict({"robustness": {"signal_gains": "2"}})
