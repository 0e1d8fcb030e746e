"""Distillation under torchrun (DistributedDataParallel, gloo, 2 CPU processes) matches a
single-process run: same steps, same global batches, only BatchNorm sees half-batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from edgekd import Dataset, student_cnn, teacher_cnn
from edgekd.train.loop import Schedule, accuracy, predict, set_seed, train

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    got = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert got.returncode == 0, got.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(digits: Dataset, tmp_path: Path) -> None:
    set_seed(0)
    teacher = train(teacher_cnn(), digits.train, Schedule(3, 1e-3, 64), seed=0)
    save_file(teacher.state_dict(), tmp_path / "teacher.safetensors")
    single, ddp = tmp_path / "single.safetensors", tmp_path / "ddp.safetensors"
    _run([sys.executable, str(WORKER), "teacher.safetensors", str(single), "cache"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
          "2", str(WORKER), "teacher.safetensors", str(ddp), "cache"], tmp_path)

    models = []
    for path in (single, ddp):
        model = student_cnn()
        model.load_state_dict(load_file(path))
        models.append(model.eval())
    a_single, a_ddp = (accuracy(m, digits.test) for m in models)
    agreement = float((predict(models[0], digits.test.x) == predict(models[1], digits.test.x))
                      .mean())
    weights = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models]
    relative = float((weights[0] - weights[1]).norm() / weights[0].norm())
    assert abs(a_single - a_ddp) <= 0.02, (a_single, a_ddp)
    assert agreement >= 0.95, agreement
    assert relative < 0.25, relative
    assert not np.isnan(relative)


@pytest.mark.slow
def test_torchrun_build_of_a_project_writes_one_build(tmp_path: Path) -> None:
    """The README's torchrun command on a user's project: both ranks train, rank 0 alone
    takes the output folder's lock and writes the build."""
    import json

    from tests.projects import classifier_project

    project = classifier_project(tmp_path / "p")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "edgekd", "build", "--config", str(project), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "x86-cpu" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]][-1] == "student_pruned"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".cache", "x86-cpu"]
