"""
=====================================================
Few-shot digits: pretrain on 0-4, classify 5-9
=====================================================

The fine-tuning recipe of few-shot learning, end to end, on data that ships
with scikit-learn (this is what ``skfewshot demo`` runs):

1. pretrain a small CNN as an ordinary classifier on the *base* classes
   (digits 0-4) with :class:`~skfewshot.training.SupervisedPretrainer`;
2. drop its head and wrap it as a frozen transformer step,
   :class:`~skfewshot.BackboneTransformer`;
3. evaluate few-shot heads on the *novel* digits 5-9, never seen in
   training, over many random 5-way K-shot episodes with
   :func:`~skfewshot.evaluate_episodes`.
"""

# %%
import torch
from sklearn.pipeline import make_pipeline

from skfewshot import BackboneTransformer
from skfewshot.datasets import load_digits_images
from skfewshot.models import Conv4
from skfewshot.plotting import FewShotCurveDisplay
from skfewshot.recipes import HEAD_LABELS, HEADS, make_head
from skfewshot.training import SupervisedPretrainer

# (1797, 1, 32, 32): the 8x8 digits enlarged, as Conv4 halves the size four times
X, y = load_digits_images(image_size=32, return_X_y=True)
base, novel = y < 5, y >= 5

torch.manual_seed(0)
trainer = SupervisedPretrainer(
    Conv4(in_channels=1, hidden=32), max_epochs=20, random_state=0
).fit(X[base], y[base])
print(f"final training accuracy: {trainer.history_[-1, 'train_acc']:.3f}")

# %%
# One pipeline per head; the frozen backbone is shared and its features are
# computed once for all of them. The heads are those of the ``skfewshot``
# command, by name (:func:`skfewshot.recipes.make_head`):
# :class:`~skfewshot.PrototypeClassifier`,
# :class:`~skfewshot.FineTunedCosineClassifier` (inductive, and transductive
# with ``entropy_weight=0.1``) and scikit-learn's ``LogisticRegression`` on
# L2-normalised features.
features = BackboneTransformer(trainer.backbone_)
heads = {HEAD_LABELS[name]: make_head(name) for name in HEADS}
display = FewShotCurveDisplay.from_estimator(
    {name: make_pipeline(features, head) for name, head in heads.items()},
    X[novel],
    y[novel],
    shots=(1, 2, 5, 10),
    n_way=5,
    n_episodes=100,
    random_state=0,
)
display.ax_.set_title("Novel digits 5-9, 5-way")
for name, scores in display.scores.items():
    print(f"{name:32s}", "  ".join(str(s).split(" (")[0] for s in scores))
