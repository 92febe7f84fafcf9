"""ML: ROOT reads the tree, scikit-learn fits and a small keras model trains, on workers.

The task: tell jets from the hard process (matched to a quark or gluon, partonFlavour != 0)
from the rest, with their kinematics and composition, in a real CMS NanoAOD sample.
"""

from __future__ import annotations

import dask
import numpy as np
from common import DATA, on_cluster_and_alone, report

FILE = f"{DATA}/nano_dy.root"
FEATURES = ("Jet_pt", "Jet_eta", "Jet_mass", "Jet_chHEF", "Jet_neEmEF", "Jet_qgl")


@dask.delayed
def read_jets(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One row per jet, read with ROOT's RDataFrame."""
    import ROOT

    frame = ROOT.RDataFrame("Events", path)
    columns = {}
    for name in (*FEATURES, "Jet_partonFlavour"):
        taken = frame.Take[
            "ROOT::RVec<float>" if name != "Jet_partonFlavour" else "ROOT::RVec<int>"
        ](name).GetValue()
        columns[name] = np.concatenate([np.asarray(list(v), dtype=float) for v in taken])
    features = np.column_stack([columns[n] for n in FEATURES])
    features[:, 0] = np.log(features[:, 0])
    return features, (columns["Jet_partonFlavour"] != 0).astype(int)


@dask.delayed
def fit_sklearn(data: tuple[np.ndarray, np.ndarray]) -> dict:
    from sklearn.ensemble import GradientBoostingClassifier

    features, labels = data
    model = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
    model.fit(features, labels)
    return {"jets": len(labels), "accuracy": model.score(features, labels)}


@dask.delayed
def train_keras(data: tuple[np.ndarray, np.ndarray]) -> dict:
    import keras

    keras.utils.set_random_seed(0)
    features, labels = data
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    model = keras.Sequential(
        [
            keras.Input((features.shape[1],)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(features, labels, epochs=5, batch_size=32, shuffle=False, verbose=0)
    return {
        "keras_loss_first": history.history["loss"][0],
        "keras_loss_last": history.history["loss"][-1],
    }


@dask.delayed
def merge(*parts: dict) -> dict:
    return {key: value for part in parts for key, value in part.items()}


def build():  # noqa: ANN201
    data = read_jets(FILE)
    return merge(fit_sklearn(data), train_keras(data))


report(*on_cluster_and_alone(build), rel_tol=1e-5)
