"""
===================================================================
Omniglot: meta-learning vs fine-tuning (a one-minute version)
===================================================================

The two families of few-shot learning on real handwritten characters, with
the same backbone, the same data and the same evaluation protocol:

* **meta-learning**: :class:`~skfewshot.training.ProtoNetMetaTrainer` trains a
  Conv4 on simulated 20-way episodes of the base alphabets;
* **fine-tuning**: :class:`~skfewshot.training.SupervisedPretrainer` trains the
  same Conv4 as an ordinary classifier over all base characters, and the
  few-shot head is fitted per support set.

Base classes: ``images_background_small1`` (5 alphabets). Test classes:
the alphabets of ``images_background_small2`` that small1 lacks (the two
published subsets share Greek and Latin, image for image, so those are
dropped from the test set: the classes must be novel). Each trainer gets a small,
equal budget here so the example runs quickly; the full comparison, with a
longer budget, rotation classes and more heads, is
``benchmarks/omniglot_meta_vs_finetune.py`` and its table in the docs.

The zips are read from ``$SKFEWSHOT_OMNIGLOT`` or ``../shared/data/omniglot``
beside the repository.
"""

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from skfewshot import (
    BackboneTransformer,
    FineTunedCosineClassifier,
    PrototypeClassifier,
    evaluate_episodes,
)
from skfewshot.datasets import load_omniglot
from skfewshot.models import Conv4
from skfewshot.training import ProtoNetMetaTrainer, SupervisedPretrainer


def _omniglot_dir():
    if "SKFEWSHOT_OMNIGLOT" in os.environ:
        return Path(os.environ["SKFEWSHOT_OMNIGLOT"])
    try:
        here = Path(__file__).resolve().parent
    except NameError:  # run interactively
        here = Path.cwd()
    return here.parent.parent / "shared" / "data" / "omniglot"


data_dir = _omniglot_dir()
have_data = (data_dir / "images_background_small1.zip").is_file()
print(f"Omniglot zips in {data_dir}: {'found' if have_data else 'absent'}")

# %%
# Train both backbones with the same compute: about 14,000 images through the
# backbone each (ProtoNet: 2 epochs of 60 episodes of 20 x 6 images;
# supervised: 5 epochs of the 2,720 base images).
if have_data:
    base = load_omniglot("images_background_small1", path=data_dir)
    test = load_omniglot("images_background_small2", path=data_dir)
    shared = sorted(set(base.group_names) & set(test.group_names))
    novel = ~np.isin(np.asarray(test.group_names)[test.groups], shared)
    X_test, y_test = test.data[novel], test.target[novel]
    print(
        f"dropped from the test set (also in small1): {shared}; "
        f"{len(np.unique(y_test))} novel characters remain"
    )
    backbones, train_time = {}, {}
    for name, make in {
        "ProtoNet (meta-learning)": lambda net: ProtoNetMetaTrainer(
            net,
            n_way=20,
            n_shot=1,
            n_query=5,
            episodes_per_epoch=60,
            max_epochs=2,
            random_state=0,
        ),
        "Supervised (fine-tuning)": lambda net: SupervisedPretrainer(
            net, head="cosine", batch_size=64, max_epochs=5, random_state=0
        ),
    }.items():
        torch.manual_seed(0)
        start = time.perf_counter()
        trainer = make(Conv4(in_channels=1)).fit(base.data, base.target)
        train_time[name] = time.perf_counter() - start
        backbones[name] = trainer.backbone_
        print(f"{name}: trained in {train_time[name]:.0f} s")

# %%
# Evaluate on the novel alphabets: 5-way and 20-way 1-shot, 100 episodes
# each, the same episodes for every backbone and head.
if have_data:
    heads = {
        "prototypes": PrototypeClassifier(),
        "fine-tuned cosine": FineTunedCosineClassifier(),
    }
    results = {}
    for bname, backbone in backbones.items():
        features = BackboneTransformer(backbone).fit_transform(X_test)
        for hname, head in heads.items():
            for n_way in (5, 20):
                scores = evaluate_episodes(
                    head,
                    features,
                    y_test,
                    n_way=n_way,
                    n_shot=1,
                    n_query=5,
                    n_episodes=100,
                    random_state=0,
                )
                results[bname, hname, n_way] = scores
                print(f"{bname:26s} {hname:18s} {n_way:2d}-way 1-shot: {scores}")

# %%
# The comparison as a bar chart with 95% confidence intervals.
if have_data:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    width = 0.35
    for ax, n_way in zip(axes, (5, 20)):
        for i, hname in enumerate(heads):
            means = [results[b, hname, n_way].mean for b in backbones]
            cis = [results[b, hname, n_way].ci95 for b in backbones]
            ax.bar(
                np.arange(len(backbones)) + i * width,
                means,
                width,
                yerr=cis,
                capsize=3,
                label=hname,
            )
        ax.set_xticks(np.arange(len(backbones)) + width / 2)
        ax.set_xticklabels([b.split(" (")[0] for b in backbones])
        ax.set_title(f"small2, {n_way}-way 1-shot")
        ax.set_ylim(0.5, 1.0)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
