"""edgekd.inputs.sources.load_samples on real files: Pillow images in class folders, .npz / .npy
arrays, Dataset factories from a file and a module; every bad input is one UsageError line
that names the config key, the file and the fix."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.errors import UsageError
from edgekd.inputs.sources import ImageOptions, Samples, load_samples


def _img(path: Path, size: tuple[int, int] = (8, 6), mode: str = "L", value: int = 10) -> None:
    """A flat image of ``size`` (width, height), like PIL takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 2 * value, 3 * value)).save(path)


def _load(spec: str, root: Path, **kw) -> Samples:  # type: ignore[no-untyped-def]
    return load_samples(spec, root=root, what=kw.pop("what", "data.train"), **kw)


# -- happy paths ------------------------------------------------------------------------


def test_class_folders_sorted_labels_and_ignored_files(tmp_path: Path) -> None:
    for cls, n, value in (("dog", 2, 80), ("cat", 3, 40), ("ant", 1, 5)):
        for i in range(n):
            _img(tmp_path / "train" / cls / f"{i}.png", value=value)
    _img(tmp_path / "train" / "cat" / "Z.PNG", value=41)  # suffixes are case-insensitive
    (tmp_path / "train" / "cat" / "README").write_text("not an image")
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    _img(tmp_path / "train" / "dog" / ".hidden.png", value=200)
    _img(tmp_path / "train" / ".cache" / "x.png", value=200)  # hidden folder: not a class
    s = _load("train", tmp_path)
    assert s.classes == ("ant", "cat", "dog") and s.kind == "images" and s.source == "train"
    assert s.x.shape == (7, 1, 6, 8) and s.x.dtype == np.float32  # [N, C, H, W]
    assert s.y is not None and s.y.dtype == np.int64
    assert list(s.y) == [0, 1, 1, 1, 1, 2, 2]
    assert [float(v) for v in s.x[:, 0, 0, 0]] == [5, 40, 40, 40, 41, 80, 80]
    first3 = _load("train", tmp_path, max_samples=3)
    assert list(first3.y) == [0, 1, 1] and np.array_equal(first3.x, s.x[:3])  # type: ignore[arg-type]


def test_rgb_gray_auto_and_resize(tmp_path: Path) -> None:
    _img(tmp_path / "rgb" / "a.jpg", size=(20, 10), mode="RGB", value=30)
    _img(tmp_path / "rgb" / "b.png", size=(7, 9), mode="RGB", value=50)
    sized = ImageOptions(size=(12, 16))
    rgb = _load("rgb", tmp_path, labeled=False, images=sized, what="data.calibration")
    assert rgb.x.shape == (2, 3, 12, 16) and rgb.y is None and rgb.classes is None
    assert [float(v) for v in rgb.x[1, :, 5, 5]] == [50, 100, 150]  # channels first, RGB order
    gray = _load("rgb", tmp_path, labeled=False, images=ImageOptions(size=(12, 16), color="gray"))
    expected = Image.new("RGB", (1, 1), (50, 100, 150)).convert("L").getpixel((0, 0))
    assert gray.x.shape == (2, 1, 12, 16) and gray.x[1, 0, 3, 3] == expected
    # auto: all single-channel -> gray; one colour image among gray ones -> rgb for all
    _img(tmp_path / "mixed" / "a.png", mode="L", value=7)
    assert _load("mixed", tmp_path, labeled=False).x.shape == (1, 1, 6, 8)
    _img(tmp_path / "mixed" / "b.png", mode="RGB", value=7)
    mixed = _load("mixed", tmp_path, labeled=False)
    assert mixed.x.shape == (2, 3, 6, 8) and list(mixed.x[0, :, 0, 0]) == [7, 7, 7]
    forced = _load("mixed", tmp_path, labeled=False, images=ImageOptions(color="rgb"))
    assert forced.x.shape == (2, 3, 6, 8)


def test_npz_signals_sequences_and_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((30, 3, 100))
    np.savez(tmp_path / "signals.npz", x=signals, y=rng.integers(0, 4, 30))
    np.savez(tmp_path / "seq.npz", x=rng.standard_normal((12, 20, 6)),
             y=rng.standard_normal((12, 2)))
    np.savez(tmp_path / "floatlabels.npz", x=np.ones((3, 2), np.uint8), y=np.array([0., 2., 1.]))
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 4)))
    sig = _load("signals.npz", tmp_path)
    assert sig.kind == "arrays" and sig.classes is None
    assert sig.x.shape == (30, 3, 100) and sig.x.dtype == np.float32 and sig.y.dtype == np.int64  # type: ignore[union-attr]
    assert np.allclose(sig.x, signals.astype(np.float32))
    seq = _load("seq.npz", tmp_path, what="data.test", labeled=False)
    assert seq.x.shape == (12, 20, 6) and seq.y.dtype == np.float32 and seq.y.shape == (12, 2)  # type: ignore[union-attr]
    fl = _load("floatlabels.npz", tmp_path)
    assert fl.y.dtype == np.int64 and list(fl.y) == [0, 2, 1] and fl.x.dtype == np.float32  # type: ignore[union-attr]
    npy = _load("x.npy", tmp_path, what="data.calibration", labeled=False)
    assert npy.y is None and npy.x.shape == (5, 4)
    few = _load("signals.npz", tmp_path, max_samples=4)
    assert len(few) == 4 and np.array_equal(few.x, sig.x[:4]) and len(few.y) == 4  # type: ignore[arg-type]
    assert len(_load(str(tmp_path / "x.npy"), tmp_path / "x.npy", labeled=False)) == 5  # absolute


def test_fingerprint_is_stable_and_follows_values(tmp_path: Path) -> None:
    x, y = np.arange(24.0).reshape(6, 4), np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    a = _load("a.npz", tmp_path).fingerprint()
    assert a == _load("a.npz", tmp_path).fingerprint() and len(a) == 64
    x[5, 3] += 1e-3
    np.savez(tmp_path / "b.npz", x=x, y=y)
    assert _load("b.npz", tmp_path).fingerprint() != a
    np.savez(tmp_path / "c.npz", x=np.arange(24.0).reshape(6, 4), y=y[::-1])
    assert _load("c.npz", tmp_path).fingerprint() != a
    np.savez(tmp_path / "d.npz", x=np.arange(24.0).reshape(4, 6), y=y[:4])  # same bytes, shape
    assert _load("d.npz", tmp_path).fingerprint() != _load("d.npz", tmp_path, max_samples=3
                                                          ).fingerprint()


FACTORY = """
import numpy as np
import torch

class Set(torch.utils.data.Dataset):
    def __len__(self): return 6
    def __getitem__(self, i): return torch.full((2, 5), float(i), requires_grad=True), i % 3

def train(): return Set()
def regression(): return [(np.ones(3) * i, np.float32(i) / 2) for i in range(4)]
def unlabeled(): return [torch.zeros(4, dtype=torch.bfloat16) for _ in range(3)]
def numbers(): return (1, 2.5, 3)
"""


def test_dataset_factories_from_a_file_and_a_module(tmp_path: Path) -> None:
    (tmp_path / "mydata.py").write_text(FACTORY)
    path_before = list(sys.path)
    s = _load("mydata.py:train", tmp_path)
    assert s.kind == "dataset" and s.classes is None and s.x.dtype == np.float32
    assert s.x.shape == (6, 2, 5) and list(s.y) == [0, 1, 2, 0, 1, 2] and s.x[4].max() == 4  # type: ignore[arg-type]
    assert len(_load("mydata.py:train", tmp_path, max_samples=2)) == 2
    reg = _load("mydata.py:regression", tmp_path)
    assert reg.y.dtype == np.float32 and list(reg.y) == [0, 0.5, 1, 1.5]  # type: ignore[union-attr]
    m = _load("mydata:unlabeled", tmp_path, what="data.calibration", labeled=False)
    assert m.x.shape == (3, 4) and m.y is None
    assert list(_load("mydata:numbers", tmp_path, labeled=False).x) == [1, 2.5, 3]
    assert sys.path == path_before  # nothing left on sys.path


def test_two_factory_files_with_one_name_do_not_clash(tmp_path: Path) -> None:
    for folder, value in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.py").write_text(f"def f(): return [({value}.0, 0)]\n")
    assert _load("a/data.py:f", tmp_path).x[0] == 1
    assert _load("b/data.py:f", tmp_path).x[0] == 2


# -- bad input ---------------------------------------------------------------------------


def _write(rel: str, text: str) -> Callable[[Path], str]:
    def make(p: Path) -> str:
        (p / rel.split(":")[0]).write_text(text)
        return rel
    return make


def _corrupt(p: Path) -> str:
    _img(p / "d" / "c" / "ok.png")
    (p / "d" / "c" / "bad.png").write_bytes(b"\x89PNG broken")
    return "d"


def _truncated_image(p: Path) -> str:
    _img(p / "d" / "c" / "ok.png")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    noise.save(p / "d" / "c" / "cut.png")
    data = (p / "d" / "c" / "cut.png").read_bytes()
    (p / "d" / "c" / "cut.png").write_bytes(data[: len(data) // 2])
    return "d"


def _sizes(p: Path) -> str:
    _img(p / "d" / "cat" / "a.png", size=(8, 8))
    _img(p / "d" / "dog" / "b.png", size=(9, 8))
    return "d"


def _truncated_npz(p: Path) -> str:
    np.savez(p / "a.npz", x=np.zeros((100, 20)))
    (p / "a.npz").write_bytes((p / "a.npz").read_bytes()[:300])
    return "a.npz"


def _npz(name: str = "a.npz", **arrays: np.ndarray) -> Callable[[Path], str]:
    def make(p: Path) -> str:
        if name.endswith(".npz"):
            np.savez(p / name, **arrays)
        else:
            np.save(p / name, arrays["x"])
        return name
    return make


BAD: list[tuple[str, Callable[[Path], str], list[str]]] = [
    ("missing", lambda p: "nope", ["does not exist", "check the path"]),
    ("not a source", _write("a.csv", "1,2"), ["not a data source", ".npz"]),
    ("py without function", _write("a.py", "x = 1"), ["not a data source", "file.py:function"]),
    ("empty folder", lambda p: (p / "e").mkdir() or "e", ["no images in", "/e", "add images"]),
    ("class folder without images", lambda p: (_img(p / "d" / "a" / "x.png"),
                                               (p / "d" / "b").mkdir(), "d")[-1],
     ["class folder", "/d/b has no images", "remove the folder"]),
    ("unlabeled folder for training", lambda p: (_img(p / "flat" / "a.png"), "flat")[-1],
     ["no class sub-folders", "one sub-folder of images per class"]),
    ("corrupt image", _corrupt, ["cannot read image", "bad.png", "replace or remove"]),
    ("truncated image", _truncated_image, ["cannot read image", "cut.png", "replace or remove"]),
    ("sizes differ", _sizes, ["cat/a.png is 8x8", "dog/b.png is 8x9", "set data.image_size"]),
    ("truncated npz", _truncated_npz, ["cannot read", "truncated", "save it again"]),
    ("garbage npz", _write("a.npz", "not a zip at all"), ["is not a numpy file", "np.savez"]),
    ("pickle npy", lambda p: ((p / "a.npy").write_bytes(pickle.dumps([1, 2])), "a.npy")[-1],
     ["is not a numpy file", "np.save"]),
    ("no x in npz", _npz(inputs=np.zeros(3), labels=np.zeros(3)),
     ["no array 'x'", "inputs, labels", "np.savez(path, x=..., y=...)"]),
    ("object array", _npz(x=np.array([{"a": 1}], dtype=object)),
     ["Python objects", "save plain numeric arrays"]),
    ("length mismatch", _npz(x=np.zeros((4, 2)), y=np.zeros(3)),
     ["4 inputs but 3 labels", "one label per input"]),
    ("zero samples", _npz(x=np.zeros((0, 3)), y=np.zeros(0)), ["holds no samples", "add some"]),
    ("scalar npy", _npz("a.npy", x=np.array(3.0)), ["single value", "first axis"]),
    ("nan in x", _npz(x=np.array([[1.0, 2], [np.nan, 0], [np.inf, 1]]), y=np.arange(3)),
     ["2 sample(s) in a.npz contain NaN or infinite values (first: sample 1)", "clean"]),
    ("nan in y", _npz(x=np.zeros((3, 2)), y=np.array([0.5, np.nan, 1])),
     ["1 label(s) in a.npz are NaN", "first: sample 1", "fix or drop"]),
    ("strings in x", _npz(x=np.array(["a", "b"]), y=np.arange(2)),
     ["inputs in a.npz are <U1, not numbers", "store real numeric arrays"]),
    ("complex x", _npz(x=np.ones((2, 2), np.complex64), y=np.arange(2)), ["not numbers"]),
    ("npy for training", _npz("a.npy", x=np.zeros((3, 2))), ["has no labels", "(x, y)"]),
    ("module not found", lambda p: "no_such_module_xyz:f", ["no module named", "install it"]),
    ("factory file missing", lambda p: "gone.py:f", ["gone.py does not exist", "check the path"]),
    ("syntax error", _write("f.py:d", "def d(:\n"), ["syntax error in", "f.py:1", "fix the file"]),
    ("no such function", _write("f.py:d", "def other():\n    return []\n"),
     ["has no function 'd'", "it has: other", "fix the name"]),
    ("factory raises", _write("f.py:d", "def d():\n    raise OSError('disk gone\\nmore')\n"),
     ["the factory f.py:d raised OSError: disk gone", "fix the factory"]),
    ("factory not a dataset", _write("f.py:d", "def d():\n    return 3\n"),
     ["returned a int, which has no len()", "map-style torch Dataset"]),
    ("generator", _write("f.py:d", "def d():\n    return (i for i in range(3))\n"),
     ["returned a generator", "map-style"]),
    ("getitem raises", _write("f.py:d", "class S:\n    def __len__(self): return 2\n"
                              "    def __getitem__(self, i): raise KeyError(i)\n"
                              "def d():\n    return S()\n"),
     ["reading item 0 of f.py:d raised KeyError", "fix the Dataset"]),
    ("ragged items", _write("f.py:d", "import numpy as np\ndef d():\n"
                            "    return [(np.zeros(3), 0), (np.zeros(3), 1), (np.zeros(4), 1)]\n"),
     ["item 2 of f.py:d has an input of shape [4], item 0 [3]", "same shape"]),
    ("ragged labels", _write("f.py:d", "import numpy as np\ndef d():\n"
                             "    return [(np.zeros(3), [0, 1]), (np.zeros(3), [1])]\n"),
     ["item 1 of f.py:d has a label of shape [1]", "same shape"]),
    ("mixed labels", _write("f.py:d", "def d():\n    return [(1.0, 0), 2.0]\n"),
     ["item 1 of f.py:d differs from item 0 in carrying a label", "(x, y) for every item"]),
    ("empty dataset", _write("f.py:d", "def d():\n    return []\n"),
     ["holds no samples", "non-empty"]),
    ("unlabeled dataset", _write("f.py:d", "def d():\n    return [1.0, 2.0]\n"),
     ["has no labels", "a Dataset returning (x, y)"]),
    ("string items", _write("f.py:d", "def d():\n    return [('a', 0), ('b', 1)]\n"),
     ["inputs in f.py:d are <U1, not numbers"]),
    ("escapes via ..", lambda p: "../elsewhere.npz",
     ["../elsewhere.npz leaves the project folder", "give an absolute path"]),
    ("factory escapes via ..", lambda p: "../evil.py:f", ["leaves the project folder"]),
]


@pytest.mark.parametrize("make,says", [(m, s) for _, m, s in BAD], ids=[n for n, _, _ in BAD])
def test_bad_input_is_one_line_naming_key_and_fix(tmp_path: Path, make, says) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "project"
    root.mkdir()
    spec = make(root)
    with pytest.raises(UsageError) as err:
        load_samples(spec, root=root, what="data.train")
    message = str(err.value)
    assert message.startswith("data.train: ") and "\n" not in message
    for fragment in says:
        assert fragment in message, (fragment, message)


def test_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _img(outside / "cat" / "a.png")
    np.savez(tmp_path / "outside.npz", x=np.zeros((2, 2)))
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.npz").symlink_to(tmp_path / "outside.npz")
    (project / "images").symlink_to(outside, target_is_directory=True)
    for spec in ("data.npz", "images"):
        with pytest.raises(UsageError, match=f"data.test: {spec} leaves the project folder"):
            load_samples(spec, root=project, what="data.test", labeled=False)
    # written absolute, the same file is the user's explicit choice
    assert len(load_samples(str(tmp_path / "outside.npz"), root=project, what="data.test",
                            labeled=False)) == 2
    inside = project / "sub"
    inside.mkdir()
    (inside / "link.npz").symlink_to(project / "data.npz")  # inside -> inside -> outside
    with pytest.raises(UsageError, match="leaves the project folder"):
        load_samples("sub/link.npz", root=project, what="data.test", labeled=False)


def test_bad_limits_and_options(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2)), y=np.arange(3))
    with pytest.raises(UsageError, match="data.train: max_samples must be at least 1, got 0"):
        load_samples("a.npz", root=tmp_path, what="data.train", max_samples=0)
    with pytest.raises(ValueError, match="data.color must be one of auto, gray, rgb, got 'grey'"):
        ImageOptions(color="grey")
    with pytest.raises(ValueError, match=r"data.image_size must be \[height, width\]"):
        ImageOptions(size=(0, 4))


def test_an_npz_of_nchw_images_is_read_as_images(tmp_path: Path) -> None:
    """A float ``[N, C, H, W]`` array with 1 or 3 channels is an image batch (robustness uses
    the image corruptions, training the shifts), as the same pictures in class folders are;
    a 4-D array with many channels, or a 1-D signal, is not."""
    from edgekd.inputs.dataset import default_inputs
    from edgekd.inputs.splits import user_data
    from edgekd.settings.project import DataSpec

    rng = np.random.default_rng(0)
    kinds = {}
    for name, shape in (("gray", (40, 1, 8, 8)), ("rgb", (40, 3, 16, 16)),
                        ("features", (40, 32, 4, 4)), ("signal", (40, 1, 64))):
        np.savez(tmp_path / f"{name}.npz", x=rng.random(shape, dtype=np.float32),
                 y=rng.integers(0, 2, 40))
        data = user_data(DataSpec(train=f"{name}.npz"), tmp_path, trains=True,
                         calibration_samples=8, seed=0)
        kinds[name] = default_inputs(data)[0].kind
    assert kinds == {"gray": "image", "rgb": "image", "features": "values",
                     "signal": "signal"}
