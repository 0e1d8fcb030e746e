"""Distil the digits student from a saved teacher, with feature and attention terms; run it
alone or under ``torchrun`` (tests/test_distributed.py compares the two).

    python tests/ddp_worker.py TEACHER.safetensors OUT.safetensors CACHE_DIR
    torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgekd import default_calibration_file, load_digits, student_cnn, teacher_cnn
from edgekd.train.distill import Distillation, auto_pairs
from edgekd.train.loop import Schedule, distributed, set_seed, train
from edgekd.train.teacher_cache import teacher_outputs

EPOCHS = 6


def main(teacher_path: str, out_path: str, cache_dir: str) -> None:
    torch.set_num_threads(1)
    with distributed() as (rank, _size):
        data = load_digits(default_calibration_file(), seed=0)
        teacher = teacher_cnn()
        teacher.load_state_dict(load_file(teacher_path))
        example = torch.from_numpy(data.train.x[:1])
        set_seed(0)
        student = student_cnn()
        pairs = auto_pairs(student, teacher.eval(), example)
        outputs, _ = teacher_outputs(teacher, data.train.x, [p.teacher for p in pairs],
                                     Path(cache_dir))
        objective = Distillation(student, outputs, pairs, example, temperature=4.0, alpha=0.5,
                                 feature_weight=1.0, attention_weight=100.0)
        train(student, data.train, Schedule(EPOCHS, 3e-3, 64), seed=0, objective=objective)
        objective.close()
        if rank == 0:
            save_file(student.state_dict(), out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
