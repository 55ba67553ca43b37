"""The papers' official metric variants, against hand computations."""

import math

import pytest

from wsigraph.train.metrics import h2mil_threshold_metrics, micro_auc


def test_h2mil_threshold_metrics_by_hand():
    # Sorted by probability: 0.9 (1), 0.8 (1), 0.4 (0), 0.35 (1), 0.2 (0), 0.1 (0). The ROC
    # thresholds (intermediate points dropped) are inf, 0.8, 0.4, 0.35, 0.1:
    #   inf, 0.1: sensitivity or specificity 0 -> skipped
    #   0.8:  sens 2/3, spec 1   -> ACC 5/6, F1 = 2 (2/3)(1) / (5/3) = 0.8 -> 1.633
    #   0.4:  sens 2/3, spec 2/3 -> ACC 4/6, F1 2/3                        -> 1.333
    #   0.35: sens 1,   spec 2/3 -> ACC 5/6, F1 0.8                        -> 1.633 (tie: later)
    y = [0, 0, 1, 1, 0, 1]
    p = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    got = h2mil_threshold_metrics(y, p)
    assert got["threshold"] == 0.35
    assert got["acc_thr"] == pytest.approx(5 / 6)
    assert got["f1_sens_spec"] == pytest.approx(0.8)


def test_h2mil_threshold_metrics_edge_cases():
    assert all(math.isnan(v) for v in h2mil_threshold_metrics([1, 1], [0.2, 0.9]).values())
    with pytest.raises(ValueError, match="binary"):
        h2mil_threshold_metrics([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match="3 values for 2"):
        h2mil_threshold_metrics([0, 1], [0.1, 0.9, 0.5])


def test_micro_auc_by_hand():
    # (slide, class) pairs: positives score 0.8, 0.7, 0.4; negatives 0.2, 0.3, 0.6 -> 8 of 9
    # positive-negative pairs are ordered correctly.
    y = [0, 1, 1]
    prob = [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
    assert micro_auc(y, prob) == pytest.approx(8 / 9)
    assert math.isnan(micro_auc([1, 1], prob[:2]))


def test_official_metrics_pool_each_repeat_and_std_over_repeats():
    from wsigraph.train.metrics import h2mil_threshold_metrics, official_metrics, repeat_std

    preds = [
        {"repeat": 0, "fold": 0, "label": [0, 1], "prob": [[0.9, 0.1], [0.2, 0.8]]},
        {"repeat": 0, "fold": 1, "label": [1, 0], "prob": [[0.4, 0.6], [0.7, 0.3]]},
        {"repeat": 1, "fold": 0, "label": [0, 1, 1], "prob": [[0.6, 0.4], [0.5, 0.5], [0.1, 0.9]]},
    ]
    per_fold, per_repeat = official_metrics(preds)
    # repeat 1: positives 0.6, 0.5, 0.9 against negatives 0.4, 0.5, 0.1 -> 8.5 of 9 pairs
    assert [f["auc_micro"] for f in per_fold] == [1.0, 1.0, pytest.approx(8.5 / 9)]
    pooled = h2mil_threshold_metrics([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3])
    assert per_repeat[0] == {"repeat": 0, **pooled}
    # the std of the repeats' means 0.85 and 0.6 (sample std: |a - b| / sqrt(2))
    assert repeat_std({0: [0.8, 0.9], 1: [0.6]}) == pytest.approx(0.25 / math.sqrt(2))
    assert math.isnan(repeat_std({0: [0.8, 0.9]}))
