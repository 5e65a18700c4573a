"""
=======================================================
Tuning the regularisation strength across episodes
=======================================================

:class:`~skfewshot.FineTunedCosineClassifier` pulls its weights toward the
class prototypes with strength ``alpha``. Like any hyper-parameter it must be
chosen on **validation classes**, disjoint from the classes we finally test
on. :class:`~skfewshot.EpisodicSplit` turns episodes into scikit-learn CV
folds (support = train, queries = test), so the search is an ordinary
:class:`~sklearn.model_selection.GridSearchCV`.

Here the features are the raw pixels of scikit-learn's digits: digits 0-4
are the validation classes, 5-9 the test classes.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skfewshot import EpisodicSplit, FineTunedCosineClassifier, evaluate_episodes
from skfewshot.datasets import load_digits_images

X, y = load_digits_images(return_X_y=True)
flatten = FunctionTransformer(lambda images: images.reshape(len(images), -1))
val, test = y < 5, y >= 5

pipe = make_pipeline(flatten, FineTunedCosineClassifier())
alphas = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
search = GridSearchCV(
    pipe,
    {"finetunedcosineclassifier__alpha": alphas},
    cv=EpisodicSplit(n_way=5, n_shot=1, n_query=15, n_episodes=40, random_state=0),
    refit=False,
).fit(X[val], y[val])
best_alpha = search.best_params_["finetunedcosineclassifier__alpha"]
print(f"best alpha on validation classes: {best_alpha}")

# %%
# The validation curve: mean query accuracy over the validation episodes,
# with a 95% confidence interval.
mean = search.cv_results_["mean_test_score"]
ci = 1.96 * search.cv_results_["std_test_score"] / np.sqrt(40)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.errorbar(alphas, mean, yerr=ci, marker="o", capsize=3)
ax.set_xscale("log")
ax.set_xlabel("alpha (pull toward the prototypes)")
ax.set_ylabel("validation accuracy (5-way 1-shot)")
ax.set_title("GridSearchCV over EpisodicSplit")
fig.tight_layout()

# %%
# Only now do we touch the test classes, once, with the chosen ``alpha``.
pipe.set_params(finetunedcosineclassifier__alpha=best_alpha)
scores = evaluate_episodes(
    pipe, X[test], y[test], n_way=5, n_shot=1, n_episodes=100, random_state=1
)
print(scores)
