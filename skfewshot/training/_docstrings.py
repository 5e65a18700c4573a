"""One docstring source for what the trainers share (private).

The trainers take the same training parameters and expose the same fitted
attributes; each is described once here. A trainer's class docstring holds a
placeholder line ``{name}`` where a shared entry goes, and
:func:`_fill_shared_docs` replaces it with the entry, its default read from the
class's ``__init__`` signature, so documentation and code cannot drift apart
(imbalanced-learn's ``Substitution`` and skorch's documentation templates do
the same).
"""

from __future__ import annotations

import inspect
import re
import textwrap

#: Parameters and attributes both trainers document identically:
#: name -> (type, description). The default of a parameter comes from the
#: signature of the class that uses the entry.
_SHARED_DOCS = {
    "module": (
        "torch.nn.Module",
        """\
        The backbone, mapping a batch of inputs to ``(batch, n_features)``.
        It is copied, never modified; training starts from its current weights.""",
    ),
    "max_epochs": (
        "int",
        """\
        Epochs of training: passes over the training data for
        :class:`SupervisedPretrainer`, ``episodes_per_epoch`` episodes for
        :class:`ProtoNetMetaTrainer`. With ``verbose=1`` each epoch prints one
        line, so a long training is never silent.""",
    ),
    "lr": (
        "float",
        """\
        Initial learning rate; the default suits the default ``optimizer``.""",
    ),
    "optimizer": (
        '{"sgd", "adam", "adamw"} or torch optimizer class',
        """\
        ``"sgd"`` uses Nesterov momentum 0.9. A class gets ``lr`` and
        ``weight_decay`` only.""",
    ),
    "weight_decay": (
        "float",
        """\
        L2 penalty of the optimizer.""",
    ),
    "lr_schedule": (
        '{"cosine"} or None',
        """\
        ``"cosine"`` anneals the learning rate to 0 over ``max_epochs`` (a
        skorch ``LRScheduler`` named ``"lr_scheduler"``). Use ``None`` when
        passing your own scheduler in ``callbacks``.""",
    ),
    "augment": (
        "callable or None",
        """\
        ``augment(X_batch) -> X_batch`` applied to every training batch (an
        episode for :class:`ProtoNetMetaTrainer`): a float tensor already on
        the training device, e.g. random shifts or rotations. Draw its
        randomness from torch's global generator (``torch.rand`` and
        friends): ``fit`` seeds it from ``random_state``.""",
    ),
    "device": (
        "str or torch.device",
        """\
        ``"auto"``: CUDA, then Apple MPS, then CPU.""",
    ),
    "callbacks": (
        "list or None",
        """\
        skorch callbacks (or ``(name, callback)`` pairs) added to the defaults,
        e.g. ``EpisodicValidation`` (image trainers only), ``EarlyStopping``,
        ``Checkpoint``. They are copied at ``fit``; the fitted copies are in
        ``net_.callbacks_``. A :class:`TrainingCheckpoint` among them records
        every parameter but ``module``, ``callbacks``, ``device`` and
        ``verbose``, and resumes only a run with the same ones; put it last
        (it saves ``EarlyStopping``'s state).""",
    ),
    "verbose": (
        "int",
        """\
        ``0`` is silent. ``1`` (the default, as in skorch) prints one line per
        epoch to stdout: loss, accuracy, duration and what the callbacks
        record. ``2`` adds a progress bar over the batches of each epoch, on
        stderr, when stderr is a terminal (in a log file, the epoch lines
        suffice). The best scores are coloured only when stdout is a
        terminal: redirected output holds no ANSI escape codes.""",
    ),
    "random_state": (
        "int, RandomState instance or None",
        """\
        Seeds the head initialisation, the order of the batches (the episodes
        for :class:`ProtoNetMetaTrainer`), dropout and ``augment``. An int
        gives identical results on the CPU (GPU kernels may not be bitwise
        deterministic).""",
    ),
    "backbone_": (
        "torch.nn.Module",
        """\
        The trained copy of ``module``, on the CPU, in eval mode. Save it with
        ``torch.save(backbone_.state_dict(), path)``. Never holds NaN/inf weights: if
        training diverges, ``fit`` warns, stops and keeps the last finite
        weights (see :meth:`fit`).""",
    ),
    "classes_": (
        "ndarray of shape (n_classes,)",
        """\
        The base classes.""",
    ),
    "n_features_out_": (
        "int",
        """\
        Features the backbone produces per sample.""",
    ),
    "n_features_in_": (
        "int",
        """\
        Size of the second axis of ``X`` (the channels for images).""",
    ),
}

#: A line that holds nothing but a placeholder: its indent and the name.
_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.MULTILINE)


def _format_default(value) -> str:
    """A default as numpydoc writes it: strings in double quotes."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _shared_entry(name: str, signature: inspect.Signature, indent: str) -> str:
    """The numpydoc entry of ``name``, with its default from ``signature``."""
    kind, text = _SHARED_DOCS[name]
    header = f"{name} : {kind}"
    parameter = signature.parameters.get(name)
    if parameter is not None and parameter.default is not inspect.Parameter.empty:
        header += f", default={_format_default(parameter.default)}"
    body = textwrap.indent(textwrap.dedent(text), indent + "    ")
    return f"{indent}{header}\n{body}"


def _fill_shared_docs(cls: type) -> type:
    """Class decorator: replace each ``{name}`` line of the docstring.

    Every placeholder must name an entry of ``_SHARED_DOCS``, and every entry
    that names a parameter of ``cls.__init__`` documents it with the default
    found there. Raises ``KeyError`` naming an unknown placeholder, so a typo
    fails at import, not in the rendered documentation.
    """
    signature = inspect.signature(cls.__init__)

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in _SHARED_DOCS:
            raise KeyError(
                f"{cls.__name__}'s docstring has the placeholder {{{name}}}, "
                f"which names no shared entry ({', '.join(sorted(_SHARED_DOCS))})."
            )
        return _shared_entry(name, signature, match["indent"])

    cls.__doc__ = _PLACEHOLDER.sub(replace, cls.__doc__)
    return cls
