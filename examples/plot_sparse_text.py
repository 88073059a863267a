"""
Sparse text: which documents support a prediction?
==================================================

A text classifier on TF-IDF features, built offline from documents that ship with the installed
packages: the docstrings of NumPy's and SciPy's public functions. The model learns to tell which
library a docstring comes from; influence then says which *training* docstrings support its
answer for a test docstring. The features stay a ``scipy.sparse`` CSR matrix throughout: fastinfl
never densifies them, fits with Newton-CG above 2000 parameters and here solves with conjugate
gradient.
"""

# %%
# The documents
# -------------
# Every public callable of ``numpy``, ``numpy.linalg``, ``numpy.fft``, ``numpy.random`` and of ten
# SciPy subpackages with a docstring of at least 200 characters; label 1 for SciPy. A fixed
# permutation holds out 20 % as test documents.
import importlib

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

import fastinfl

modules = {0: ["numpy", "numpy.linalg", "numpy.fft", "numpy.random"],
           1: ["scipy.linalg", "scipy.stats", "scipy.optimize", "scipy.signal", "scipy.special",
               "scipy.interpolate", "scipy.integrate", "scipy.sparse", "scipy.spatial", "scipy.ndimage"]}
names, texts, labels, seen = [], [], [], set()
for label, mods in modules.items():
    for mod_name in mods:
        mod = importlib.import_module(mod_name)
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            obj = getattr(mod, attr, None)
            doc = getattr(obj, "__doc__", None)
            if attr.startswith("_") or not callable(obj) or not isinstance(doc, str) or len(doc) < 200:
                continue
            if id(obj) in seen:  # the same function exported twice
                continue
            seen.add(id(obj))
            names.append(f"{mod_name}.{attr}")
            texts.append(doc)
            labels.append(label)
labels = np.array(labels, float)
order = np.random.default_rng(0).permutation(len(names))
cut = int(0.8 * len(names))
train, test = order[:cut], order[cut:]
print(f"{len(names)} docstrings ({int(labels.sum())} SciPy), {len(train)} for training")

# %%
# TF-IDF features (fitted on the training documents only) and the model.
vectorizer = TfidfVectorizer(min_df=2, sublinear_tf=True, token_pattern=r"(?u)\b[A-Za-z_][A-Za-z_]+\b")
X_train = vectorizer.fit_transform([texts[i] for i in train]).tocsr()
X_test = vectorizer.transform([texts[i] for i in test]).tocsr()
y_train, y_test = labels[train], labels[test]
print(f"X_train: {X_train.shape[0]} x {X_train.shape[1]} CSR, {X_train.nnz} nonzeros")

model = fastinfl.LogisticRegression(l2=1.0, tol=1e-8).fit(X_train, y_train)
print(f"test accuracy {model.score(X_test, y_test):.3f}")
# solver="cg": conjugate gradient on Hessian-vector products, one pass over the CSR rows each, never
# forming the dense 6000 x 6000 Hessian (solver="auto" would form and factor it, as it fits in memory).
inf = fastinfl.Influence(model, X_train, y_train, solver="cg")

# %%
# One prediction explained
# ------------------------
# We take the first test document and list the training documents with the most negative influence (they
# *support* the right answer: removing them would raise its loss) and the most positive (they
# pull the other way).
t = 0
x_t, y_t = X_test[t], y_test[t : t + 1]
p = model.predict_proba(x_t)[0, 1]  # (n, n_classes): the probability of class 1, SciPy
print(f"test document {names[test[t]]}: P(SciPy) = {p:.3f}, truly {'SciPy' if y_t[0] else 'NumPy'}")
top = inf.top_k(x_t, y_t, k=8)
for title, idx, vals in (("supporting", top.helpful_idx[0], top.helpful[0]),
                         ("opposing", top.harmful_idx[0], top.harmful[0])):
    print(title + ":")
    for i, v in zip(idx, vals, strict=True):
        if i >= 0:
            print(f"  {v:+.3e}  {names[train[i]]}")

# %%
# The figure: the eight supporting and eight opposing training documents, coloured by library.
fig, ax = plt.subplots(figsize=(8, 5))
idx = np.concatenate([top.helpful_idx[0], top.harmful_idx[0][::-1]])
vals = np.concatenate([top.helpful[0], top.harmful[0][::-1]])
keep = idx >= 0
idx, vals = idx[keep], vals[keep]
colours = ["C1" if y_train[i] else "C0" for i in idx]
ax.barh(range(len(idx)), vals, color=colours)
ax.set_yticks(range(len(idx)), [names[train[i]] for i in idx], fontsize=8)
ax.axvline(0, color="k", lw=0.8)
ax.invert_yaxis()
ax.set(xlabel="influence on the test loss (negative: supports the prediction)",
       title=f"why {names[test[t]]} reads as {'SciPy' if p > 0.5 else 'NumPy'} (orange: SciPy, blue: NumPy)")
fig.tight_layout()
plt.show()
