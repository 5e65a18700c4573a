"""Few-shot classification as scikit-learn estimators on top of PyTorch.

The support set goes to ``fit``, the queries to ``predict``; a torch backbone
becomes a transformer step with :class:`BackboneTransformer`, so everything
composes with :class:`~sklearn.pipeline.Pipeline`,
:class:`~sklearn.model_selection.GridSearchCV` and friends.

Public names are imported lazily, so ``import skfewshot`` stays cheap and
does not import torch until an estimator is used.
"""

import importlib

__version__ = "0.1.0.dev0"

_LAZY = {
    "BackboneTransformer": "skfewshot.backbone",
    "PrototypeClassifier": "skfewshot.prototype",
    "FineTunedCosineClassifier": "skfewshot.finetune",
    "EpisodicGridSearchCV": "skfewshot.model_selection",
    "EpisodicSplit": "skfewshot.model_selection",
    "EpisodeScores": "skfewshot.model_selection",
    "evaluate_episodes": "skfewshot.model_selection",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skfewshot' has no attribute {name!r}")


def __dir__():
    return __all__
