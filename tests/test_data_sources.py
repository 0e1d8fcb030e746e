"""edgekd.datasets: every form of the user's data, from real files (Pillow images, .npz,
.npy, a Dataset factory), and the one-line errors for broken ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.datasets import ImageOptions, load_samples
from edgekd.errors import UsageError


def _img(path, size=(8, 6), mode="L", value=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 2 * value, 3 * value)).save(path)


def test_class_folders_give_labels_in_sorted_order(tmp_path) -> None:
    for cls, n in (("dog", 2), ("cat", 3)):
        for i in range(n):
            _img(tmp_path / "train" / cls / f"{i}.png", value=40 if cls == "cat" else 80)
    (tmp_path / "train" / "cat" / "README.txt").write_text("not an image")
    (tmp_path / "train" / ".hidden").mkdir()
    s = load_samples("train", root=tmp_path, what="data.train")
    assert s.classes == ("cat", "dog") and s.kind == "images"
    assert s.x.shape == (5, 1, 6, 8) and s.x.dtype == np.float32  # CHW, height 6, width 8
    assert list(s.y) == [0, 0, 0, 1, 1] and s.x[0].max() == 40 and s.x[-1].max() == 80
    assert len(load_samples("train", root=tmp_path, what="data.train", max_samples=2)) == 2


def test_rgb_resize_and_unlabeled_flat_folder(tmp_path) -> None:
    _img(tmp_path / "calib" / "a.jpg", size=(20, 10), mode="RGB")
    _img(tmp_path / "calib" / "b.png", size=(7, 9), mode="RGB")
    s = load_samples("calib", root=tmp_path, what="data.calibration", labeled=False,
                     images=ImageOptions(size=(12, 16)))
    assert s.x.shape == (2, 3, 12, 16) and s.y is None and s.classes is None
    gray = load_samples("calib", root=tmp_path, what="data.calibration", labeled=False,
                        images=ImageOptions(size=(12, 16), color="gray"))
    assert gray.x.shape == (2, 1, 12, 16)
    with pytest.raises(UsageError, match="no class sub-folders"):
        load_samples("calib", root=tmp_path, what="data.train", labeled=True,
                     images=ImageOptions(size=(12, 16)))


def test_arrays_of_any_rank_and_regression_targets(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "signals.npz", x=rng.standard_normal((30, 3, 100)),
             y=rng.integers(0, 4, 30))
    np.savez(tmp_path / "seq.npz", x=rng.standard_normal((12, 20, 6)),
             y=rng.standard_normal((12, 2)))
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 4)))
    sig = load_samples("signals.npz", root=tmp_path, what="data.train")
    assert sig.x.shape == (30, 3, 100) and sig.y.dtype == np.int64
    seq = load_samples("seq.npz", root=tmp_path, what="data.test", labeled=False)
    assert seq.x.shape == (12, 20, 6) and seq.y.dtype == np.float32 and seq.y.shape == (12, 2)
    assert load_samples("x.npy", root=tmp_path, what="data.calibration", labeled=False).y is None
    a = load_samples("signals.npz", root=tmp_path, what="data.train").fingerprint()
    assert a == sig.fingerprint()
    np.savez(tmp_path / "signals.npz", x=sig.x + np.float32(1e-3), y=sig.y)
    assert load_samples("signals.npz", root=tmp_path, what="data.train").fingerprint() != a


def test_dataset_factories_from_a_file_and_a_module(tmp_path) -> None:
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "class Set(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 6\n"
        "    def __getitem__(self, i): return torch.full((2, 5), float(i)), i % 3\n"
        "def train(): return Set()\n"
        "def unlabeled(): return [torch.zeros(4) for _ in range(3)]\n")
    s = load_samples("mydata.py:train", root=tmp_path, what="data.train")
    assert s.kind == "dataset" and s.x.shape == (6, 2, 5) and list(s.y) == [0, 1, 2, 0, 1, 2]
    m = load_samples("mydata:unlabeled", root=tmp_path, what="data.calibration", labeled=False)
    assert m.x.shape == (3, 4) and m.y is None
    torch.manual_seed(0)


BAD = [
    ("missing", lambda p: "nope", "does not exist"),
    ("not a source", lambda p: (p / "a.csv").write_text("1,2") and "a.csv", "not a data source"),
    ("corrupt image", lambda p: (_img(p / "d" / "c" / "ok.png"),
                                 (p / "d" / "c" / "bad.png").write_bytes(b"\x89PNG broken"),
                                 "d")[-1], "cannot read image"),
    ("sizes differ", lambda p: (_img(p / "d" / "c" / "a.png", size=(8, 8)),
                                _img(p / "d" / "c" / "b.png", size=(9, 8)), "d")[-1],
     "data.image_size"),
    ("empty class", lambda p: (_img(p / "d" / "a" / "x.png"), (p / "d" / "b").mkdir(),
                               "d")[-1], "has no images"),
    ("no x in npz", lambda p: (np.savez(p / "a.npz", inputs=np.zeros(3)), "a.npz")[-1],
     "no array 'x'"),
    ("object array", lambda p: (np.savez(p / "a.npz", x=np.array([{"a": 1}], dtype=object)),
                                "a.npz")[-1], "Python objects"),
    ("length mismatch", lambda p: (np.savez(p / "a.npz", x=np.zeros((4, 2)), y=np.zeros(3)),
                                   "a.npz")[-1], "4 inputs but 3 labels"),
    ("truncated npz", lambda p: (np.savez(p / "a.npz", x=np.zeros((100, 20))),
                                 (p / "a.npz").write_bytes((p / "a.npz").read_bytes()[:300]),
                                 "a.npz")[-1], "truncated"),
    ("infinite values", lambda p: (np.save(p / "a.npy", np.array([[1.0, np.inf]])),
                                   "a.npy")[-1], "NaN or infinite"),
    ("unlabeled train", lambda p: (np.save(p / "a.npy", np.zeros((3, 2))), "a.npy")[-1],
     "has no labels"),
    ("factory raises", lambda p: ((p / "f.py").write_text(
        "def d():\n    raise OSError('disk gone')\n"), "f.py:d")[-1], "raised OSError"),
    ("factory not a dataset", lambda p: ((p / "f.py").write_text("def d():\n    return 3\n"),
                                         "f.py:d")[-1], "no len()"),
    ("ragged items", lambda p: ((p / "f.py").write_text(
        "import numpy as np\ndef d():\n    return [(np.zeros(3), 0), (np.zeros(4), 1)]\n"),
        "f.py:d")[-1], "item 1"),
    ("escapes the project", lambda p: "../elsewhere.npz", "leaves the project folder"),
]


@pytest.mark.parametrize("make,says", [(m, s) for _, m, s in BAD], ids=[n for n, _, _ in BAD])
def test_bad_data_is_one_line(tmp_path, make, says) -> None:
    spec = make(tmp_path)
    with pytest.raises(UsageError) as err:
        load_samples(spec, root=tmp_path, what="data.train")
    assert says in str(err.value) and "data.train" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_symlink_out_of_the_project_is_refused(tmp_path) -> None:
    outside = tmp_path / "outside.npz"
    np.savez(outside, x=np.zeros((2, 2)))
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.npz").symlink_to(outside)
    with pytest.raises(UsageError, match="leaves the project folder"):
        load_samples("data.npz", root=project, what="data.test", labeled=False)
    assert len(load_samples(str(outside), root=project, what="data.test", labeled=False)) == 2
