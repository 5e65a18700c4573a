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
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from skfewshot import (
    BackboneTransformer,
    FineTunedCosineClassifier,
    PrototypeClassifier,
)
from skfewshot.datasets import load_digits_images
from skfewshot.models import Conv4
from skfewshot.plotting import FewShotCurveDisplay
from skfewshot.training import SupervisedPretrainer

X, y = load_digits_images(return_X_y=True)  # (1797, 1, 8, 8)
X = X.repeat(4, axis=-1).repeat(4, axis=-2)  # 32x32: Conv4 pools four times
base, novel = y < 5, y >= 5

torch.manual_seed(0)
trainer = SupervisedPretrainer(
    Conv4(in_channels=1, hidden=32), max_epochs=20, random_state=0
).fit(X[base], y[base])
print(f"final training accuracy: {trainer.history_[-1, 'train_acc']:.3f}")

# %%
# One pipeline per head; the frozen backbone is shared and its features are
# computed once for all of them.
features = BackboneTransformer(trainer.backbone_)
heads = {
    "PrototypeClassifier": PrototypeClassifier(),
    "FineTunedCosine": FineTunedCosineClassifier(random_state=0),
    "FineTunedCosine (transductive)": FineTunedCosineClassifier(
        transductive=True, entropy_weight=0.1, random_state=0
    ),
    "LogisticRegression": make_pipeline(Normalizer(), LogisticRegression()),
}
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
