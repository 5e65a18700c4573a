"""
=====================================================
Your own images: train, predict, and answer "unknown"
=====================================================

The workflow of ``skfewshot train`` and ``skfewshot predict`` in Python, on a
folder of image files with one sub-folder per class (the layout of
torchvision's ``ImageFolder``):

1. train a backbone on the classes you have many images of;
2. recognise new classes from a few images each (the *support* folder);
3. label new images (the *query* folder), answering ``"unknown"`` for images
   of none of the support classes.

To keep the example self-contained, it writes scikit-learn's digits as PNG
files first: digits 0-4 to train on, 3 images each of the novel digits 5-7 as
the support, and queries of 5-7 mixed with digits 8 and 9, which the support
never shows.
"""

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from sklearn.pipeline import make_pipeline

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.datasets import ImageFileReader, load_digits_images, load_image_folder
from skfewshot.models import Conv4, load_backbone, save_backbone
from skfewshot.training import SupervisedPretrainer

root = Path(tempfile.mkdtemp())
images, y = load_digits_images(image_size=32, return_X_y=True)
rng = np.random.RandomState(0)


def write(folder, digits, per_class):
    """PNG files of ``per_class`` random images of each digit: folder/<digit>/."""
    for digit in digits:
        (folder / f"digit{digit}").mkdir(parents=True)
        for i in rng.choice(np.flatnonzero(y == digit), per_class, replace=False):
            pixels = np.round(255 * images[i, 0]).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"digit{digit}" / f"{i}.png")


write(root / "train", range(5), 150)
write(root / "support", [5, 6, 7], 3)
write(root / "query", [5, 6, 7, 8, 9], 4)

# %%
# Train a backbone on the training folder and save it with its architecture
# (what ``skfewshot train my_images/train --output my_backbone.pt`` does).
train = load_image_folder(root / "train", image_size=32)
torch.manual_seed(0)
trainer = SupervisedPretrainer(Conv4(in_channels=1, hidden=32), max_epochs=8, verbose=0)
trainer.fit(train.data, train.target)
save_backbone(
    trainer.backbone_,
    root / "my_backbone.pt",
    input_shape=(1, 32, 32),
    trained_on={"dataset": "folder", "classes": list(train.target_names)},
)

# %%
# Few-shot model: read the files, embed them with the frozen backbone, and
# classify by the nearest class prototype; ``unknown_label`` turns on the
# "none of these" answer, with a threshold chosen from the support images
# themselves (leave-one-out cosines to the prototypes).
backbone, meta = load_backbone(root / "my_backbone.pt")
model = make_pipeline(
    ImageFileReader(image_size=32),
    BackboneTransformer(backbone),
    PrototypeClassifier(unknown_label="unknown"),
)
support = sorted((root / "support").rglob("*.png"))
model.fit([str(p) for p in support], [p.parent.name for p in support])

queries = sorted((root / "query").rglob("*.png"))
predicted = model.predict([str(p) for p in queries])
truth = [p.parent.name for p in queries]
for path, label in list(zip(queries, predicted))[:5]:
    print(f"{path.relative_to(root)}: {label}")

# %%
# The queries and their answers. Digits 8 and 9 have no support class, so
# the right answer for them is "unknown" (a green title is right, red wrong).
known = {"digit5", "digit6", "digit7"}
fig, axes = plt.subplots(4, 5, figsize=(7.5, 6.4))
for ax, path, label, true in zip(axes.T.ravel(), queries, predicted, truth):
    right = label == (true if true in known else "unknown")
    ax.imshow(Image.open(path), cmap="gray_r")
    ax.set_title(f"{label}\n({true})", color="green" if right else "red", fontsize=9)
    ax.axis("off")
fig.suptitle("query: predicted (true); support = digits 5-7, 3 images each")
fig.tight_layout()

n_right = sum(
    label == (true if true in known else "unknown")
    for label, true in zip(predicted, truth)
)
print(f"{n_right} of {len(queries)} queries answered right")
