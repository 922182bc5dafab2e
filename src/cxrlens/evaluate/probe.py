"""The logistic-regression probe behind linear evaluation (paper 002) and the raw-pixel floor.

For every class (one-vs-rest for multi-label sets), a scikit-learn logistic regression with
class weights inversely proportional to the class frequencies (``class_weight="balanced"``),
on standardised features by default; C is chosen from a grid by AUROC in a stratified k-fold
search on the training images only, then the test images are scored with AUC, AUPRC, ACC,
SEN, SPE and F1 with bootstrap 95 % CIs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cxrlens.config import LinearEvalConfig
from cxrlens.devices import usable_cores
from cxrlens.evaluate.classification import binary_report

T = TypeVar("T")


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """Silence scikit-learn's ConvergenceWarning (the grid's weakest regularisation rarely converges fully, and AUROC
    picks C regardless). Entered once by the calling thread: the warning filters are process-wide, and entering them
    from several threads at once would leave the list corrupted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def fit_probe(features: np.ndarray, labels: np.ndarray, config: LinearEvalConfig) -> tuple[object, float]:
    """Grid-searched balanced logistic regression for one binary task; returns (model, best C). Callers silence
    the grid's convergence warnings with :func:`quiet_convergence`."""
    positives = int(labels.sum())
    folds = min(config.folds, positives, labels.size - positives)
    if folds < 2:
        raise ValueError(f"needs at least 2 positive and 2 negative training images, has {positives} and "
                         f"{labels.size - positives}")
    regression = LogisticRegression(class_weight="balanced", max_iter=config.max_iter, solver=config.solver)
    estimator = make_pipeline(StandardScaler() if config.standardize else "passthrough", regression)
    search = GridSearchCV(estimator, {"logisticregression__C": list(config.c_grid)}, scoring="roc_auc",
                          cv=StratifiedKFold(folds, shuffle=True, random_state=config.seed))
    search.fit(features, labels)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def linear_eval(train_features: np.ndarray, train_labels: np.ndarray, train_masks: np.ndarray,
                test_features: np.ndarray, test_labels: np.ndarray, test_masks: np.ndarray,
                classes: Sequence[str], config: LinearEvalConfig,
                test_patients: np.ndarray | None = None) -> tuple[dict[str, dict], np.ndarray]:
    """Per class: ``{"C", "train_images", "test_images", metric: {"value", "low", "high"}}``, or ``{"skipped": why}``;
    and the test probabilities (N_test x K; NaN for unscored classes and unknown labels). With ``test_patients``
    the CIs resample whole patients."""
    def probe(column: int) -> tuple[dict, np.ndarray | None]:
        known_train = train_masks[:, column].astype(bool)
        known_test = test_masks[:, column].astype(bool)
        y_train = train_labels[known_train, column].astype(int)
        y_test = test_labels[known_test, column].astype(int)
        if not 0 < y_test.sum() < y_test.size:
            return {"skipped": f"test split has {int(y_test.sum())} positives of {y_test.size}"}, None
        try:
            model, c = fit_probe(train_features[known_train], y_train, config)
        except ValueError as error:
            return {"skipped": str(error)}, None
        probabilities = model.predict_proba(test_features[known_test])[:, 1]
        return {"C": c, "train_images": int(y_train.size), "test_images": int(y_test.size),
                **binary_report(y_test, probabilities, 0.5, config.bootstrap, config.seed,
                                None if test_patients is None else test_patients[known_test])}, probabilities

    results: dict[str, dict] = {}
    scores = np.full(test_labels.shape, np.nan)
    with quiet_convergence():
        probed = in_threads(probe, range(len(classes)))
    for column, (name, (result, probabilities)) in enumerate(zip(classes, probed)):
        results[name] = result
        if probabilities is not None:
            scores[test_masks[:, column].astype(bool), column] = probabilities
    return results, scores


def in_threads(work: Callable[[int], T], tasks: Sequence[int]) -> list[T]:
    """``[work(task) for task in tasks]``, the tasks spread over one thread per usable CPU core (scikit-learn's
    solvers and BLAS release the GIL; each thread's BLAS gets its share of the cores). The results do not depend on
    the threads: every task is seeded on its own."""
    workers = min(len(tasks), usable_cores())
    if workers <= 1:
        return [work(task) for task in tasks]
    with threadpool_limits(limits=max(1, usable_cores() // workers)), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, tasks))
