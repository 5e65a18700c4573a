"""The ``skfewshot`` command: ``demo``, ``evaluate`` and ``runs``.

Sits on top of the library; nothing imports it. Every user error (a wrong
path, a missing file, an impossible episode) prints one line on stderr and
exits with status 1; ``--help`` documents every option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import zipfile

import numpy as np

__all__ = ["main"]

HEADS = ("prototype", "finetune", "transductive", "logreg")
_HEAD_LABELS = {
    "prototype": "PrototypeClassifier",
    "finetune": "FineTunedCosine",
    "transductive": "FineTunedCosine (transductive)",
    "logreg": "LogisticRegression",
}
_USER_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
    ImportError,
    zipfile.BadZipFile,
    OSError,
)


class _CLIError(Exception):
    """A user error to report on one line."""


# --------------------------------------------------------------------------
# building blocks shared by the sub-commands
# --------------------------------------------------------------------------


def make_head(name, seed):
    """A fresh few-shot head by its command-line name.

    ``transductive`` is :class:`~skfewshot.FineTunedCosineClassifier` with
    ``transductive=True, entropy_weight=0.1``: a small, fixed entropy weight
    (a weight of 1 over-sharpened 1-shot predictions on raw-pixel digit
    episodes when the head was developed). ``logreg`` is scikit-learn's
    :class:`~sklearn.linear_model.LogisticRegression` on L2-normalised features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from .finetune import FineTunedCosineClassifier
    from .prototype import PrototypeClassifier

    if name == "prototype":
        return PrototypeClassifier()
    if name == "finetune":
        return FineTunedCosineClassifier(random_state=seed)
    if name == "transductive":
        return FineTunedCosineClassifier(
            transductive=True, entropy_weight=0.1, random_state=seed
        )
    if name == "logreg":
        return make_pipeline(Normalizer(), LogisticRegression(max_iter=1000))
    raise _CLIError(f"unknown head {name!r}; choose from {', '.join(HEADS)}")


def _upsample(images, size):
    """Nearest-neighbour upsampling of (n, c, s, s) images by an integer factor."""
    s = images.shape[-1]
    if size == s:
        return images
    if size % s:
        raise _CLIError(
            f"the backbone expects {size}x{size} images; {s}x{s} images can only "
            "be enlarged by an integer factor"
        )
    k = size // s
    return images.repeat(k, axis=-1).repeat(k, axis=-2)


def _progress(verbose):
    """Context that sends library chatter (skorch's epoch table) to stderr."""
    return (
        contextlib.redirect_stdout(sys.stderr) if verbose else contextlib.nullcontext()
    )


def _scores_to_records(results):
    return [
        {
            "head": head,
            "n_way": s.n_way,
            "n_shot": s.n_shot,
            "n_query": s.n_query,
            "n_episodes": s.n_episodes,
            "mean": float(s.mean),
            "ci95": float(s.ci95),
        }
        for head, scores in results.items()
        for s in scores
    ]


def format_table(results, shots):
    """Human table: one row per head, one column per shot count, mean ± CI in %."""
    width = max(len(_HEAD_LABELS.get(h, h)) for h in results) + 2
    head = "head".ljust(width) + "".join(f"{k}-shot".rjust(14) for k in shots)
    lines = [head, "-" * len(head)]
    for name, scores in results.items():
        cells = "".join(
            f"{100 * s.mean:6.1f} ± {100 * s.ci95:4.1f}".rjust(14) for s in scores
        )
        lines.append(_HEAD_LABELS.get(name, name).ljust(width) + cells)
    return "\n".join(lines)


def _emit(args, payload, text):
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def run_demo(
    *,
    seed=0,
    shots=(1, 2, 5, 10),
    n_episodes=200,
    max_epochs=20,
    heads=HEADS,
    verbose=1,
):
    """The digits demo: pretrain on digits 0-4, few-shot on the novel digits 5-9.

    Returns ``(results, info)``: ``results`` maps each head name to a list of
    :class:`~skfewshot.model_selection.EpisodeScores`, one per shot count;
    ``info`` holds the training time and sizes.
    """
    import torch
    from sklearn.pipeline import make_pipeline

    from .backbone import BackboneTransformer
    from .datasets import load_digits_images
    from .model_selection import evaluate_episodes
    from .models import Conv4
    from .training import SupervisedPretrainer

    X, y = load_digits_images(return_X_y=True)
    X = _upsample(X, 32)  # Conv4 halves the size four times: 32 -> 2x2 maps
    base, novel = y < 5, y >= 5
    with torch.random.fork_rng():  # seeded initial weights, global RNG untouched
        torch.manual_seed(seed)
        net = Conv4(in_channels=1, hidden=32)
    trainer = SupervisedPretrainer(
        net,
        max_epochs=max_epochs,
        random_state=seed,
        verbose=2 if verbose else 0,
    )
    t0 = time.perf_counter()
    with _progress(verbose):
        trainer.fit(X[base], y[base])
    train_time = time.perf_counter() - t0
    features = BackboneTransformer(trainer.backbone_)
    results = {}
    for head in heads:
        results[head] = [
            evaluate_episodes(
                make_pipeline(features, make_head(head, seed)),
                X[novel],
                y[novel],
                n_way=5,
                n_shot=k,
                n_query=15,
                n_episodes=n_episodes,
                random_state=seed,
                verbose=verbose,
            )
            for k in shots
        ]
    info = {
        "train_time_s": round(train_time, 2),
        "n_base": int(base.sum()),
        "n_novel": int(novel.sum()),
        "max_epochs": max_epochs,
    }
    return results, info


def _cmd_demo(args):
    if args.plot:  # fail before training, not after
        from .plotting import _check_matplotlib

        _check_matplotlib("skfewshot demo --plot")
    shots = tuple(args.shots)
    results, info = run_demo(
        seed=args.seed,
        shots=shots,
        n_episodes=args.episodes,
        max_epochs=args.epochs,
        verbose=not args.quiet,
    )
    if args.plot:
        from .plotting import FewShotCurveDisplay

        names = {h: _HEAD_LABELS[h] for h in results}
        display = FewShotCurveDisplay.from_scores(
            {names[h]: s for h, s in results.items()}
        )
        display.ax_.set_title(
            "Novel digits 5-9, 5-way (backbone pretrained on digits 0-4)"
        )
        display.figure_.savefig(args.plot, dpi=120, bbox_inches="tight")
    payload = {
        "command": "demo",
        "seed": args.seed,
        **info,
        "results": _scores_to_records(results),
    }
    text = (
        f"Backbone: Conv4 pretrained on digits 0-4 ({info['n_base']} images, "
        f"{info['max_epochs']} epochs, {info['train_time_s']:.1f} s)\n"
        f"Novel digits 5-9 ({info['n_novel']} images), 5-way, 15 queries per "
        f"class, {args.episodes} episodes per cell, seed {args.seed}; "
        "accuracy % ± 95% CI\n\n" + format_table(results, shots)
    )
    if args.plot:
        text += f"\n\nFigure written to {args.plot}"
    _emit(args, payload, text)


# --------------------------------------------------------------------------
# evaluate / runs: a saved backbone + a head
# --------------------------------------------------------------------------


def _image_size(meta, default=28):
    shape = meta.get("input_shape")
    return int(shape[-1]) if shape else default


def _load_dataset(args, meta):
    from . import datasets

    if args.dataset == "omniglot":
        bunch = datasets.load_omniglot(
            args.subset, path=args.data_dir, image_size=_image_size(meta)
        )
        return bunch.data, bunch.target, bunch.groups
    if args.dataset == "digits":
        X, y = datasets.load_digits_images(return_X_y=True)
        return _upsample(X, _image_size(meta, 16)), y, None
    bunch = datasets.load_banking77(args.data_dir)
    return np.asarray(bunch.data, dtype=object), bunch.target, None


def _lsa_features(texts):
    """Unsupervised LSA features of texts: TF-IDF, then truncated SVD (<= 256-d)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit_transform(texts)
    svd = TruncatedSVD(n_components=min(256, tfidf.shape[1] - 1), random_state=0)
    return svd.fit_transform(tfidf).astype(np.float32)


def _cmd_evaluate(args):
    from sklearn.pipeline import make_pipeline

    from .backbone import BackboneTransformer
    from .model_selection import evaluate_episodes
    from .models import load_backbone

    if args.dataset == "banking77":
        if args.backbone:
            raise _CLIError(
                "--backbone is an image backbone; banking77 is evaluated on "
                "built-in LSA text features (leave --backbone out)"
            )
        if not args.data_dir:
            raise _CLIError("banking77 needs --data-dir (the folder with train.csv)")
        meta = {"architecture": "LSA (TF-IDF + SVD, 256-d)", "input_shape": None}
    else:
        if not args.backbone:
            raise _CLIError(f"--backbone FILE is required for --dataset {args.dataset}")
        if args.dataset == "omniglot" and not args.data_dir:
            raise _CLIError(
                "omniglot needs --data-dir (the folder with the Omniglot zips)"
            )
        module, meta = load_backbone(args.backbone)
    X, y, groups = _load_dataset(args, meta)
    if args.dataset == "banking77" and args.text_encoder:
        from .text import SentenceEncoder

        pipe = make_pipeline(
            SentenceEncoder(args.text_encoder), make_head(args.head, args.seed)
        )
        meta["architecture"] = f"SentenceEncoder({args.text_encoder})"
    elif args.dataset == "banking77":
        # Unsupervised features fitted on the pool texts (no labels), once.
        X = _lsa_features(X)
        pipe = make_head(args.head, args.seed)
    else:
        pipe = make_pipeline(
            BackboneTransformer(module), make_head(args.head, args.seed)
        )
    if args.within_alphabet and groups is None:
        raise _CLIError("--within-alphabet needs a dataset with groups (omniglot)")
    t0 = time.perf_counter()
    scores = evaluate_episodes(
        pipe,
        X,
        y,
        n_way=args.n_way,
        n_shot=args.n_shot,
        n_query=args.n_query,
        n_episodes=args.episodes,
        groups=groups,
        within_groups=args.within_alphabet,
        random_state=args.seed,
        verbose=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    payload = {
        "command": "evaluate",
        "dataset": args.dataset,
        "subset": args.subset if args.dataset == "omniglot" else None,
        "backbone": args.backbone,
        "architecture": meta["architecture"],
        "head": args.head,
        "within_alphabet": bool(args.within_alphabet),
        "seed": args.seed,
        "seconds": round(elapsed, 2),
        **_scores_to_records({args.head: [scores]})[0],
    }
    text = (
        f"{args.dataset} ({meta['architecture']} + {_HEAD_LABELS[args.head]}"
        f"{', within-alphabet' if args.within_alphabet else ''}): {scores}"
        f"  [{elapsed:.1f} s]"
    )
    _emit(args, payload, text)


def _cmd_runs(args):
    from sklearn.base import clone

    from .backbone import BackboneTransformer
    from .datasets import load_omniglot_runs
    from .models import load_backbone

    module, meta = load_backbone(args.backbone)
    runs = load_omniglot_runs(args.runs, image_size=_image_size(meta)).runs
    if not runs:
        raise _CLIError(f"no runs found under {args.runs}")
    features = BackboneTransformer(module).fit(runs[0].X_support)
    head = make_head(args.head, args.seed)
    rows = []
    for run in runs:
        clf = clone(head).fit(features.transform(run.X_support), run.y_support)
        pred = clf.predict(features.transform(run.X_query))
        errors = int(np.sum(pred != run.y_query))
        rows.append(
            {
                "run": run.name,
                "errors": errors,
                "n_queries": len(run.y_query),
                "error_rate": errors / len(run.y_query),
            }
        )
    overall = float(np.mean([r["error_rate"] for r in rows]))
    payload = {
        "command": "runs",
        "backbone": args.backbone,
        "head": args.head,
        "runs": rows,
        "error_rate": overall,
    }
    lines = [f"{'run':<8}{'errors':>8}{'error rate':>12}"]
    lines += [
        f"{r['run']:<8}{r['errors']:>5}/{r['n_queries']:<2}"
        f"{100 * r['error_rate']:>11.1f}%"
        for r in rows
    ]
    lines.append(
        f"overall error rate: {100 * overall:.2f}% over {len(rows)} runs "
        f"({meta['architecture']} + {_HEAD_LABELS[args.head]})"
    )
    _emit(args, payload, "\n".join(lines))


# --------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    """The ``skfewshot`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="skfewshot",
        description="Few-shot classification with scikit-learn estimators on PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    common.add_argument(
        "--json", action="store_true", help="print a JSON document instead of the table"
    )
    common.add_argument(
        "--quiet", action="store_true", help="no progress bars (on stderr)"
    )

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="pretrain on digits 0-4, evaluate few-shot on the novel digits 5-9",
        description=(
            "The main job, on scikit-learn's bundled digits: pretrain a Conv4 with "
            "SupervisedPretrainer on digits 0-4, then evaluate 5-way episodes on the "
            "novel digits 5-9 with PrototypeClassifier, FineTunedCosineClassifier "
            "(inductive and transductive) and LogisticRegression; print mean accuracy "
            "with 95%% confidence intervals."
        ),
    )
    demo.add_argument(
        "--shots",
        type=_positive_int,
        nargs="+",
        default=[1, 2, 5, 10],
        help="shots per class to evaluate (default: 1 2 5 10)",
    )
    demo.add_argument(
        "--episodes",
        type=_positive_int,
        default=200,
        help="episodes per cell of the table (default: 200)",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=20,
        help="pretraining epochs (default: 20)",
    )
    demo.add_argument(
        "--plot", metavar="FILE.png", help="write the accuracy-vs-shots figure"
    )
    demo.set_defaults(func=_cmd_demo)

    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="episodic evaluation of a saved backbone + head on a dataset",
        description=(
            "Episodic evaluation (mean accuracy ± 95%% CI) of a backbone saved with "
            "skfewshot.models.save_backbone and a few-shot head on novel classes."
        ),
    )
    ev.add_argument(
        "--dataset",
        choices=("omniglot", "digits", "banking77"),
        required=True,
        help="the data to draw episodes from",
    )
    ev.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the data files (omniglot: the zips; banking77: train.csv)",
    )
    ev.add_argument(
        "--subset",
        default="images_background_small2",
        help="Omniglot subset (default: images_background_small2)",
    )
    ev.add_argument(
        "--backbone",
        metavar="FILE",
        help="backbone file written by skfewshot.models.save_backbone (image data); "
        "banking77 uses built-in LSA text features instead",
    )
    ev.add_argument(
        "--text-encoder",
        metavar="NAME",
        help="banking77: a sentence-transformers model name or path to embed the "
        "texts (needs the text extra); default: built-in LSA features",
    )
    ev.add_argument(
        "--head",
        choices=HEADS,
        default="prototype",
        help="few-shot head (default: prototype)",
    )
    ev.add_argument(
        "--n-way",
        type=_positive_int,
        default=5,
        help="classes per episode (default: 5)",
    )
    ev.add_argument(
        "--n-shot",
        type=_positive_int,
        default=1,
        help="support examples per class (default: 1)",
    )
    ev.add_argument(
        "--n-query",
        type=_positive_int,
        default=15,
        help="queries per class (default: 15)",
    )
    ev.add_argument(
        "--episodes",
        type=_positive_int,
        default=600,
        help="number of episodes (default: 600)",
    )
    ev.add_argument(
        "--within-alphabet",
        action="store_true",
        help="Omniglot: draw all classes of an episode from one alphabet",
    )
    ev.set_defaults(func=_cmd_evaluate)

    runs = sub.add_parser(
        "runs",
        parents=[common],
        help="the 20-run Omniglot one-shot benchmark",
        description=(
            "Error rate of a saved backbone + head on the Omniglot one-shot "
            "classification runs (runNN/training, runNN/test, runNN/class_labels.txt), "
            "from a folder or a zip."
        ),
    )
    runs.add_argument(
        "--runs",
        metavar="PATH",
        required=True,
        help="folder or zip holding run01 ... run20",
    )
    runs.add_argument(
        "--backbone",
        metavar="FILE",
        required=True,
        help="backbone file written by skfewshot.models.save_backbone",
    )
    runs.add_argument(
        "--head",
        choices=HEADS,
        default="prototype",
        help="few-shot head (default: prototype)",
    )
    runs.set_defaults(func=_cmd_runs)
    return parser


def main(argv=None):
    """Entry point of the ``skfewshot`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 on a user error (reported on one line),
        2 on a command-line syntax error (argparse's convention).

    Examples
    --------
    >>> from skfewshot.cli import main
    >>> main(["runs", "--runs", "/nonexistent", "--backbone", "/nonexistent.pt"])
    1
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (_CLIError, *_USER_ERRORS) as exc:
        message = (
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        print(f"skfewshot {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
