"""
=======================================================
Tuning the regularisation strength across episodes
=======================================================

:class:`~skfewshot.FineTunedCosineClassifier` pulls its weights toward the
class prototypes with strength ``alpha``. Like any hyper-parameter it must be
chosen on **validation classes**, disjoint from the classes we finally test
on. :class:`~skfewshot.model_selection.EpisodicGridSearchCV` scores every
candidate on the same validation episodes (support = train, queries = test),
with ``GridSearchCV``'s results (``cv_results_``, ``best_params_``); the
library's heads compute a batch of episodes at a time, so hundreds of episodes
per candidate take seconds. (:class:`~skfewshot.EpisodicSplit` turns the same
episodes into folds of an ordinary
:class:`~sklearn.model_selection.GridSearchCV`, one fit per episode.)

Here the features are the raw pixels of scikit-learn's digits: digits 0-4
are the validation classes, 5-9 the test classes.
"""

# %%
import matplotlib.pyplot as plt

from skfewshot import FineTunedCosineClassifier, evaluate_episodes
from skfewshot.datasets import load_digits_images
from skfewshot.model_selection import EpisodicGridSearchCV

images, y = load_digits_images(return_X_y=True)
X = images.reshape(len(images), -1)  # raw pixels as features
val, test = y < 5, y >= 5

alphas = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
n_episodes = 200
search = EpisodicGridSearchCV(
    FineTunedCosineClassifier(),
    {"alpha": alphas},
    n_way=5,
    n_shot=1,
    n_query=15,
    n_episodes=n_episodes,
    random_state=0,
    refit=False,
).fit(X[val], y[val])
best_alpha = search.best_params_["alpha"]
print(f"best alpha on validation classes: {best_alpha}")

# %%
# The validation curve: mean query accuracy over the validation episodes,
# with a 95% confidence interval.
mean = search.cv_results_["mean_test_score"]
ci = search.cv_results_["ci95_test_score"]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.errorbar(alphas, mean, yerr=ci, marker="o", capsize=3)
ax.set_xscale("log")
ax.set_xlabel("alpha (pull toward the prototypes)")
ax.set_ylabel("validation accuracy (5-way 1-shot)")
ax.set_title(f"EpisodicGridSearchCV, {n_episodes} episodes")
fig.tight_layout()

# %%
# Only now do we touch the test classes, once, with the chosen ``alpha``.
head = FineTunedCosineClassifier(alpha=best_alpha)
scores = evaluate_episodes(
    head, X[test], y[test], n_way=5, n_shot=1, n_episodes=600, random_state=1
)
print(scores)
