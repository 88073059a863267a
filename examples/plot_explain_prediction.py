"""
Explain a prediction
====================

Which training images made a 10-class model misread this digit? We fit a softmax
(multinomial) logistic regression on scikit-learn's 8 x 8 digits, pick a test digit the model
gets wrong, and show the training images whose removal would most *lower* its test loss (the most
harmful: positive influence) and most *raise* it (the most helpful: negative influence), each with
its label.

Influence is measured on the test point's true label: a harmful training image pushes the model
away from the right answer.
"""

# %%
# Data and model
# --------------
# 1500 training and 297 test images, pixels standardised with the training mean and standard
# deviation. ``l2`` is fastinfl's sum convention (``1/C`` of scikit-learn).
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import fastinfl

digits = load_digits()
X, y, images = digits.data, digits.target, digits.images
mean, std = X[:1500].mean(0), X[:1500].std(0)
Xs = (X - mean) / np.where(std > 0, std, 1.0)
X_train, y_train, X_test, y_test = Xs[:1500], y[:1500], Xs[1500:], y[1500:]

model = fastinfl.MultinomialLogisticRegression(l2=1.0).fit(X_train, y_train)
pred = model.predict(X_test)
print(f"test accuracy {np.mean(pred == y_test):.3f}, {np.sum(pred != y_test)} of {len(y_test)} wrong")

# %%
# The most confidently wrong test digit
# -------------------------------------
# ``model.losses`` gives each test point's loss (the negative log-probability of its label).
inf = fastinfl.Influence(model, X_train, y_train)
wrong = np.flatnonzero(pred != y_test)
t = wrong[np.argmax(model.losses(X_test[wrong], y_test[wrong]))]
proba = model.predict_proba(X_test[t : t + 1])[0]
print(f"test digit {t}: label {y_test[t]}, predicted {pred[t]} with probability {proba.max():.2f}")

top = inf.top_k(X_test[t : t + 1], y_test[t : t + 1], k=6)
harmful, helpful = top.harmful_idx[0], top.helpful_idx[0]

# %%
# How far would removing them move the loss? ``loo_change`` predicts the change of the test
# loss on removing each training image and refitting (a Newton step without it); we check the
# most harmful one against an actual refit.
change = inf.loo_change(X_test[t : t + 1], y_test[t : t + 1], harmful[:1])[0, 0]
actual = fastinfl.loo_retrain(model, X_train, y_train, harmful[:1],
                              X_test[t : t + 1], y_test[t : t + 1])[0, 0]
print(f"removing training image {harmful[0]}: predicted loss change {change:+.4f}, refit {actual:+.4f}")

# %%
# The picture
# -----------
# Top row: the test digit and its six most harmful training images (they look like the digit but
# carry another label, or carry its label but look like the predicted class). Bottom row: the six
# most helpful (typical examples of the true class).
fig, axes = plt.subplots(2, 7, figsize=(10, 4.2))
axes[0, 0].imshow(images[1500 + t], cmap="gray_r")
axes[0, 0].set_title(f"test: label {y_test[t]}\npredicted {pred[t]}", fontsize=9, color="C3")
axes[1, 0].axis("off")
panels = [(harmful, top.harmful[0], "harmful"), (helpful, top.helpful[0], "helpful")]
for row, (idx, vals, name) in enumerate(panels):
    for j, (i, v) in enumerate(zip(idx, vals, strict=True)):
        ax = axes[row, j + 1]
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"{name}\nlabel {y_train[i]}, I={v:+.2f}", fontsize=8)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()
