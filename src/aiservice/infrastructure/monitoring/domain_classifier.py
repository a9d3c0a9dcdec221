"""The domain classifier behind the ``DomainClassifier`` port: multivariate drift as an ROC AUC.

Reference rows are labelled 0 and current rows 1; a small gradient-boosted tree model tries to tell
them apart, and its out-of-fold ROC AUC is the answer: about 0.5 when the two are alike, up to 1 when
they are easy to tell apart. Trees need no scaling, take NaN for missing values natively, and split
ordinal category codes well enough for a yes/no question, so the profile's encoding is used as is.

The sides are subsampled to the same size (at most ``max_rows_per_side``), so the AUC does not depend
on the window's length, and everything is seeded. It runs on one thread: 2,000 rows a side of a few
features take about 0.1 s that way, while OpenMP threads competing with the serving threads took
seconds. scikit-learn is imported on first use: the rest of the service runs without it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MIN_ROWS_PER_SIDE = 20


class SklearnDomainClassifier:
    """``HistGradientBoostingClassifier`` with stratified k-fold, out-of-fold ROC AUC."""

    def __init__(self, *, max_rows_per_side: int = 5000, folds: int = 3, max_iter: int = 50) -> None:
        self.max_rows_per_side = max_rows_per_side
        self.folds = folds
        self.max_iter = max_iter

    def auc(self, reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64], seed: int) -> float:
        """0.5 when too few rows (fewer than 20 a side) to tell anything."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(seed)
        per_side = min(len(reference), len(current), self.max_rows_per_side)
        if per_side < MIN_ROWS_PER_SIDE or reference.shape[1] == 0:
            return 0.5
        x = np.vstack(
            [
                reference[rng.choice(len(reference), per_side, replace=False)],
                current[rng.choice(len(current), per_side, replace=False)],
            ]
        )
        y = np.repeat([0, 1], per_side)
        model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, max_depth=3, learning_rate=0.1, early_stopping=False, random_state=seed
        )
        folds = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=seed)
        with threadpool_limits(limits=1):  # OpenMP threads on a busy host cost ten times what they save here
            scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
        return float(roc_auc_score(y, scores))
