"""
Serving: ask a running service
==============================

``fastinfl serve`` answers influence queries over HTTP from a state saved by
``Influence.save``: a model fitted once, its Hessian factored once, then any number of
"which training points drove this prediction?" requests, batched together when they arrive
together. Here we save a state, start the service on 127.0.0.1 (a free port), ask it for the
most helpful and harmful training points of one test point, read the answer, and stop it.
Needs the ``serve`` extra (Starlette and uvicorn).
"""

# %%
# Fit and save
# ------------
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer

import fastinfl

X, y = load_breast_cancer(return_X_y=True)
X = (X - X.mean(0)) / X.std(0)
X_train, y_train, X_test, y_test = X[:450], y[:450], X[450:], y[450:]
inf = fastinfl.Influence(fastinfl.LogisticRegression(l2=1.0).fit(X_train, y_train), X_train, y_train)
workdir = tempfile.mkdtemp()
state, train = os.path.join(workdir, "state.npz"), os.path.join(workdir, "train.npz")
inf.save(state)  # versioned .npz, never pickle; checked against the training data on load
np.savez(train, X=X_train, y=y_train)

# %%
# Start the service
# -----------------
# ``--port 0`` takes a free port; the first line on stdout says where it listens, once it
# accepts requests. (From a shell: ``fastinfl serve state.npz --train train.npz``.)
server = subprocess.Popen(
    [sys.executable, "-m", "fastinfl.cli", "serve", state, "--train", train, "--host", "127.0.0.1",
     "--port", "0", "--quiet"],
    stdout=subprocess.PIPE, text=True)
line = server.stdout.readline()
if not line:  # it stopped instead: its one-line reason is on stderr
    raise RuntimeError(f"fastinfl serve exited with status {server.wait()}")
print(line.strip())
url = re.search(r"http://\S+", line).group(0)

# %%
# Ask it
# ------
# ``POST /v1/top_k`` with a JSON body (``Content-Type: application/json`` is required): the test
# points as lists, their labels and ``k``. The answer holds, per test point, the indices of the
# ``k`` most helpful and most harmful training rows and their influence.
def post(path, body):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


with urllib.request.urlopen(url + "/healthz", timeout=60) as response:
    print("healthz:", json.load(response))
answer = post("/v1/top_k", {"X": X_test[:1].tolist(), "y": y_test[:1].tolist(), "k": 5})
for key, value in answer.items():
    print(f"{key:>12}: {value[0] if key.endswith('_idx') else np.round(value[0], 7).tolist()}")

# %%
# The service's answer is the library's: the same call in process gives the same rows.
local = inf.top_k(X_test[:1], y_test[:1], k=5)
assert answer["harmful_idx"][0] == local.harmful_idx[0].tolist()
assert np.allclose(answer["harmful"][0], local.harmful[0])

# %%
# Stop it
# -------
# SIGTERM lets the requests in flight finish; the exit status is 0.
server.terminate()
print("exit status", server.wait(timeout=60))

# %%
# The answer, drawn: the five most helpful (negative) and most harmful (positive) training rows.
fig, ax = plt.subplots(figsize=(7, 3.2))
rows = answer["helpful_idx"][0] + answer["harmful_idx"][0]
values = answer["helpful"][0] + answer["harmful"][0]
ax.bar([str(r) for r in rows], values, color=["C2"] * 5 + ["C3"] * 5)
ax.axhline(0, color="k", lw=0.8)
ax.set(xlabel="training row", ylabel="influence on the test loss",
       title="top_k from the service: helpful (green) and harmful (red)")
fig.tight_layout()
plt.show()
