"""
=============================================
Transductive vs inductive fine-tuning
=============================================

An *inductive* classifier labels each query on its own. A *transductive* one
looks at the whole query set of an episode: with ``transductive=True``,
:class:`~skfewshot.FineTunedCosineClassifier` adapts a copy of its fitted
weights to the queries it is asked about by minimising the entropy of its
predictions on them (Dhillon et al., 2020), then predicts. The fitted state is
never changed, and :func:`~skfewshot.evaluate_episodes` hands each episode's
query set to a single ``predict`` call, so the comparison is fair.

Features: raw pixels of the novel digits 5-9.
"""

# %%
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot.datasets import load_digits_images
from skfewshot.plotting import FewShotCurveDisplay

X, y = load_digits_images(return_X_y=True)
flatten = FunctionTransformer(lambda images: images.reshape(len(images), -1))
novel = y >= 5

heads = {
    "PrototypeClassifier": PrototypeClassifier(),
    "FineTunedCosine (inductive)": FineTunedCosineClassifier(),
    "FineTunedCosine (transductive)": FineTunedCosineClassifier(
        transductive=True, entropy_weight=0.1
    ),
}
display = FewShotCurveDisplay.from_estimator(
    {name: make_pipeline(flatten, head) for name, head in heads.items()},
    X[novel],
    y[novel],
    shots=(1, 2, 5),
    n_way=5,
    n_episodes=60,
    random_state=0,
)
display.ax_.set_title("Novel digits 5-9, 5-way, raw pixels")
for name, scores in display.scores.items():
    print(name, "  ".join(str(s).split(" (")[0] for s in scores))

# %%
# The fitted state is untouched by transductive prediction: the same queries
# give the same probabilities twice.
clf = heads["FineTunedCosine (transductive)"]
Xn = X[novel].reshape(novel.sum(), -1)
yn = y[novel]
support = np.concatenate([np.flatnonzero(yn == c)[:1] for c in range(5, 10)])
clf.fit(Xn[support], yn[support])
first = clf.predict_proba(Xn[:50])
assert np.array_equal(first, clf.predict_proba(Xn[:50]))
