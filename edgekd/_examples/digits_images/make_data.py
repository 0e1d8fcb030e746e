"""Write this example's data the way your own data would look: PNG images in one folder per
class (data/train, data/test) and a folder of unlabeled PNGs to calibrate INT8 with
(data/calibration). The images are scikit-learn's handwritten digits, upscaled to 16x16."""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def save(images: np.ndarray, labels: np.ndarray | None, folder: Path) -> None:
    for i, img in enumerate(images):
        sub = folder / f"digit_{labels[i]}" if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        pixels = (img * (255 / 16)).round().astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16), Image.Resampling.BILINEAR).save(
            sub / f"{i:04d}.png")


digits = load_digits()
x_train, x_test, y_train, y_test = train_test_split(
    digits.images, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
save(x_train, y_train, Path("data/train"))
save(x_test, y_test, Path("data/test"))
save(x_train[:200], None, Path("data/calibration"))
print(f"wrote {len(x_train)} training, {len(x_test)} test and 200 calibration images to data/")
