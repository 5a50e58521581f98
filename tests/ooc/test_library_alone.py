"""The library without the orchestration: ``pip install ooc`` (no extra) has none of
Prefect, MLflow or distributed, and everything in ``ooc`` still works.

The check runs a realistic library session in a fresh interpreter where importing any
package of the ``flows`` extra fails, as it would in an environment without it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The top-level modules of the `flows` extra (and what only they pull in).
ORCHESTRATION = (
    "distributed", "prefect", "prefect_dask", "mlflow", "rich", "pydantic_settings",
    "matplotlib", "bokeh", "psutil", "fastapi",
)  # fmt: skip

SESSION = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
        return None

sys.meta_path.insert(0, Absent())

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import ooc

data, out = sys.argv[1] + "/data", sys.argv[1] + "/predictions"
ooc.generate_dataset(data, 40_000, n_features=4, chunk_rows=10_000, seed=1)
X, y = ooc.read_parquet(data, target="y", block_rows=5_000)
pipe = make_pipeline(
    ooc.StandardScaler(),
    ooc.Incremental(SGDClassifier(random_state=0), n_epochs=2, shuffle_blocks=True,
                    random_state=0),
)
pipe.fit(X, y, incremental__classes=[0, 1])
accuracy = (pipe.predict(X).compute() == y.compute()).mean()
assert accuracy > 0.7, accuracy
jobs = ooc.predict_parquet(pipe, data, out, block_rows=5_000)
assert len(jobs) == 4 and len(pd.read_parquet(out)) == 40_000

tabular = sys.argv[1] + "/tabular"
ooc.generate_dataset(tabular, 20_000, n_features=3, chunk_rows=10_000, seed=2,
                     n_categorical=1, missing_rate=0.05)
frame, target = ooc.read_parquet(tabular, target="y", block_rows=5_000)
text = [c for c in frame.columns if str(frame[c].dtype) == "category"]
assert text, frame.dtypes
numbers = make_pipeline(SimpleImputer(), ooc.StandardScaler())
encode = ooc.OnePass(make_column_transformer(
    (OneHotEncoder(handle_unknown="ignore"), text), remainder=numbers))
encode.fit(frame)
encoded = encode.transform(frame).compute()
dense = encoded.toarray() if hasattr(encoded, "toarray") else np.asarray(encoded)
assert dense.shape[0] == 20_000 and np.isfinite(dense).all(), dense

loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok", round(float(accuracy), 3))
"""


def test_the_library_needs_none_of_the_orchestration_packages(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"]).lower()
    assert not [name for name in ORCHESTRATION if name.replace("_", "-") in required]
    assert set(ORCHESTRATION) >= {"distributed", "prefect", "mlflow"}

    code = f"BLOCKED = {set(ORCHESTRATION)!r}\n" + textwrap.dedent(SESSION)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("ok "), proc.stdout
