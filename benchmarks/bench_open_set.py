"""Open-set episodes: AUROC and known-class accuracy of the "unknown" answer.

5-way 1-shot and 5-shot episodes, 15 queries per class, plus 15 queries of
each of 5 classes outside the support (``n_unknown_way=5``); both library
heads with ``unknown_label=-1`` and ``unknown_threshold="auto"``. Reported
per setting (mean ± 95% CI over the episodes): the AUROC of
``score_samples`` (known vs unknown queries), the accuracy on the known
queries and the open-set accuracy (all queries, unknown ones right when
answered unknown).

Data (no backbone is trained: the features are raw pixels):

* digits: scikit-learn's 8x8 digits as 64 pixel features, all 10 classes
  (each episode: 5 known + 5 unknown digits);
* Omniglot: the images_background_small2 alphabets that small1 lacks
  (Japanese (katakana), Sanskrit, Tagalog: 106 characters), 28x28 pixels
  (784 features), read from ../shared/data/omniglot.

Run from the repository root::

    python benchmarks/bench_open_set.py --episodes 300 --seed 0
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot.datasets import load_omniglot, omniglot_shared_alphabets
from skfewshot.model_selection import evaluate_episodes

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "omniglot"


def omniglot_novel():
    """Pixels and labels of the small2 alphabets that small1 lacks."""
    small2 = DATA / "images_background_small2.zip"
    shared = omniglot_shared_alphabets(
        "images_background_small2",
        "images_background_small1",
        path=small2,
        other_path=DATA / "images_background_small1.zip",
    )
    X, y = load_omniglot(
        "images_background_small2", path=small2, exclude_alphabets=shared, return_X_y=True
    )
    return X.reshape(len(X), -1).astype(np.float32), y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    digits = load_digits(return_X_y=True)
    datasets = {"digits (64 px)": digits, "Omniglot novel (784 px)": omniglot_novel()}
    heads = {
        "PrototypeClassifier": PrototypeClassifier(unknown_label=-1),
        "FineTunedCosineClassifier": FineTunedCosineClassifier(unknown_label=-1),
    }
    print(f"machine: {platform.platform()}, {platform.processor()}")
    print("| data | head | shots | AUROC | known acc. | open-set acc. | cpu s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for data_name, (X, y) in datasets.items():
        for head_name, head in heads.items():
            for shots in (1, 5):
                cpu = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # 1-shot guess
                    scores = evaluate_episodes(
                        head, X, y, n_way=5, n_shot=shots, n_query=15,
                        n_unknown_way=5, n_episodes=args.episodes,
                        random_state=args.seed,
                    )  # fmt: skip
                cpu = time.process_time() - cpu
                print(
                    f"| {data_name} | {head_name} | {shots} | "
                    f"{scores.auroc_mean:.3f} ± {scores.auroc_ci95:.3f} | "
                    f"{100 * scores.known_mean:.1f} ± {100 * scores.known_ci95:.1f} | "
                    f"{100 * scores.mean:.1f} ± {100 * scores.ci95:.1f} | {cpu:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
