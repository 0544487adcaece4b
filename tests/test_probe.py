"""The feature-quality probe: kNN / linear, folds by scene, box matching, and a run folder's probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featurizer.errors import DataError
from featurizer.annotations.match import iou_matrix
from featurizer.probe import group_folds, knn_accuracy, linear_probe_accuracy, match_to_gt, probe_run

ROOT = Path(__file__).resolve().parents[1]


def clustered(n_classes=6, n_scenes=10, per=5, dim=32, spread=3.0, seed=0):
    """Features with known class structure: class means far apart + unit noise, per scene."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim)) * spread
    X, y, g = [], [], []
    for s in range(n_scenes):
        for c in range(n_classes):
            for _ in range(per):
                X.append(means[c] + rng.normal(size=dim))
                y.append(f"class{c}")
                g.append(f"scene{s:04}_00")
    return np.array(X, dtype=np.float32), np.array(y), np.array(g)


# ------------------------------------------------------------------------------------ folds


def test_group_folds_never_share_a_scene_and_cover_every_sample_once():
    rng = np.random.default_rng(1)
    groups = np.array([f"scene{s:04}_00" for s in rng.integers(0, 13, size=200)])
    splits = group_folds(groups, folds=5)
    assert len(splits) == 5
    seen = np.zeros(len(groups), dtype=int)
    for train, test in splits:
        assert set(groups[train]).isdisjoint(set(groups[test]))
        assert len(train) + len(test) == len(groups)
        seen[test] += 1
    assert (seen == 1).all()
    sizes = [len(test) for _, test in splits]
    assert max(sizes) - min(sizes) <= max(np.unique(groups, return_counts=True)[1])


def test_group_folds_fewer_scenes_than_folds_is_leave_one_scene_out():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    splits = group_folds(groups, folds=5)
    assert [sorted(set(groups[test])) for _, test in splits] == [["a"], ["b"], ["c"]]
    assert [test.tolist() for _, test in splits] == [[0, 1], [2], [3, 4, 5]]
    assert group_folds(np.array(["a", "a"]), folds=5) == []
    assert np.isnan(knn_accuracy(np.ones((2, 3)), ["x", "y"], ["a", "a"]))


# ------------------------------------------------------------------------------------ probes


def test_probes_near_perfect_on_separable_classes():
    X, y, g = clustered()
    assert knn_accuracy(X, y, g, k=5, folds=5) >= 0.95
    assert linear_probe_accuracy(X, y, g, folds=5) >= 0.95


def test_probes_at_chance_on_shuffled_labels():
    X, y, g = clustered(per=8)  # 480 samples, 6 balanced classes
    y_shuffled = np.random.default_rng(5).permutation(y)
    chance = 1 / 6
    knn = knn_accuracy(X, y_shuffled, g)
    lin = linear_probe_accuracy(X, y_shuffled, g)
    assert abs(knn - chance) < 0.1, knn
    assert abs(lin - chance) < 0.1, lin


def test_probes_are_deterministic():
    X, y, g = clustered(per=3, spread=0.7)  # overlapping classes: accuracies strictly between 0 and 1
    a = (knn_accuracy(X, y, g), linear_probe_accuracy(X, y, g, seed=3))
    b = (knn_accuracy(X, y, g), linear_probe_accuracy(X, y, g, seed=3))
    assert a == b
    assert 0.2 < a[0] < 1.0 and 0.2 < a[1] < 1.0


def test_knn_uses_cosine_similarity():
    # same direction, very different norms: cosine kNN must see them as one class
    X = np.array([[1, 0], [10, 0.1], [0, 1], [0.1, 20], [5, 0], [0, 7]], dtype=np.float32)
    y = ["a", "a", "b", "b", "a", "b"]
    g = ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert knn_accuracy(X, y, g, k=1) == 1.0


# ------------------------------------------------------------------------------------ matching


def test_box_iou_and_match_to_gt_threshold():
    gt = np.array([[0, 0, 0, 1, 1, 1], [5, 5, 5, 2, 2, 2]], dtype=np.float32)
    pred = np.array(
        [
            [0, 0, 0, 0.6, 1, 1],  # inside GT 0: IoU = 0.6 / 1 = 0.6
            [5, 5, 5, 0.8, 2, 2],  # inside GT 1: IoU = (0.8*4) / (2*4) = 0.4
        ],
        dtype=np.float32,
    )
    iou = iou_matrix(pred, gt)
    np.testing.assert_allclose(iou, [[0.6, 0.0], [0.0, 0.4]], atol=1e-6)
    assert match_to_gt(pred, gt).tolist() == [0, -1]
    assert match_to_gt(pred, gt, threshold=0.4 - 1e-6).tolist() == [0, 1]


def test_match_to_gt_is_greedy_one_to_one_highest_iou_first():
    gt = np.array([[0, 0, 0, 1, 1, 1], [0.3, 0, 0, 1, 1, 1]], dtype=np.float32)
    # shifted half-overlapping unit boxes: IoU(d) = (1 - d) / (1 + d)
    pred = np.array([[0.1, 0, 0, 1, 1, 1], [0.0, 0, 0, 1, 1, 1], [9, 9, 9, 1, 1, 1]], dtype=np.float32)
    iou = iou_matrix(pred, gt)
    np.testing.assert_allclose(iou[:2], [[0.9 / 1.1, 0.8 / 1.2], [1.0, 0.7 / 1.3]], atol=1e-6)
    # pred 1 takes GT 0 (IoU 1.0); pred 0 then takes GT 1 (0.667 >= 0.5); pred 2 overlaps nothing
    assert match_to_gt(pred, gt).tolist() == [1, 0, -1]
    assert match_to_gt(np.zeros((0, 6)), gt).tolist() == []
    assert match_to_gt(pred, np.zeros((0, 6))).tolist() == [-1, -1, -1]


# ------------------------------------------------------------------------------------ probe_run

CLASSES = ["chair", "table", "door"]


def build_run(run_dir: Path, predicted: bool = True, with_2d: bool = True, seed: int = 0) -> dict:
    """A fake run folder: 6 scenes x 3 classes x 2 instances, features = class mean + noise.

    Predicted instances are the GT boxes (slightly grown, IoU 0.81) in an order rotated by s + 1 in
    scene s, plus one false positive per scene; GT has one extra singleton class ("lamp") in scene
    0. 2D features exist for all instances but the first predicted one of each scene (GT instance
    s + 1: chair, table, table, door, door, chair). Returns the expected counts.
    """
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    mean3 = {c: rng.normal(size=16) * 4 for c in CLASSES + ["lamp", "fp"]}
    mean2 = {c: rng.normal(size=8) * 4 for c in CLASSES + ["lamp", "fp"]}
    feats3, feats2, pred_attrs, gt_attrs = {}, {}, {}, {}
    n_pred = n_fp = 0
    for s in range(6):
        scene = f"scene{s:04}_00"
        labels = [c for c in CLASSES for _ in range(2)] + (["lamp"] if s == 0 else [])
        centers = np.arange(len(labels))[:, None] * np.array([3.0, 0, 0]) + s
        gt_locs = np.concatenate([centers, np.ones((len(labels), 3))], axis=1)
        gt_attrs[scene] = {"objects": labels, "locs": torch.tensor(gt_locs, dtype=torch.float32)}
        order = [(j + s + 1) % len(labels) for j in range(len(labels))]
        p_labels = [labels[j] for j in order] + ["fp"]
        p_locs = [np.concatenate([gt_locs[j, :3], [1.0, 1.0, 1 / 0.81]]) for j in order]  # IoU 0.81
        p_locs.append([100.0, 100, 100, 1, 1, 1])  # matches nothing
        p_labels = p_labels if predicted else labels
        p_locs = np.array(p_locs) if predicted else gt_locs
        if predicted:
            pred_attrs[scene] = {
                "objects": ["pred"] * len(p_labels),
                "locs": torch.tensor(p_locs, dtype=torch.float32),
            }
            n_fp += 1
        for i, lab in enumerate(p_labels):
            key = f"{scene}_{i:02}"
            feats3[key] = torch.tensor(mean3[lab] + rng.normal(size=16), dtype=torch.float32)
            if i > 0:
                feats2[key] = torch.tensor(mean2[lab] + rng.normal(size=8), dtype=torch.float32)
        n_pred += len(p_labels)
    torch.save(feats3, run_dir / "feats3d.pt")
    if with_2d:
        torch.save(feats2, run_dir / "feats2d.pt")
    torch.save(gt_attrs, run_dir / "gt_attributes.pt")
    if predicted:
        torch.save(pred_attrs, run_dir / "attributes.pt")
    summary = {
        "status": "ok",
        "error": None,
        "choices": {"dataset": "synthetic", "segmenter": "mask3d" if predicted else "gt",
                    "encoder3d": "uni3d_tiny", "encoder2d": "tiny", "fusion": "mask_pool"},
        "scenes": 6,
        "instances": n_pred,
        "keys_3d": len(feats3),
        "keys_2d": len(feats2) if with_2d else 0,
        "missing_3d": {},
        "missing_2d": {"no_valid_view": 6} if with_2d else {},
        "views_per_instance": {"mean": 3.0, "median": 3.0, "min": 1, "max": 5},
        "timings": {"read": 0.1, "3d": 0.2, "2d": 0.3, "total": 0.7},
        "files": {
            "feats3d": "feats3d.pt",
            "feats2d": "feats2d.pt" if with_2d else None,
            "attributes": {"val": "attributes.pt" if predicted else "gt_attributes.pt"},
            "gt_attributes": {"val": "gt_attributes.pt"},
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return {"instances": n_pred, "fp": n_fp, "keys_2d": len(feats2)}


def test_probe_run_predicted_segmenter(tmp_path):
    expected = build_run(tmp_path / "run")
    metrics = probe_run(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    # 6 scenes x 6 matched + the lamp of scene 0; one false positive per scene
    assert metrics["matched"] == 37 and metrics["unmatched"] == 6 == expected["fp"]
    assert metrics["n_3d"] == 36  # the singleton "lamp" class is dropped
    # no 2D feature for predicted index 0: 2 chairs, 2 tables, 2 doors
    assert metrics["n_2d"] == 30 and metrics["n_concat"] == 30
    assert metrics["n_classes"] == 3 and metrics["n_classes_2d"] == 3
    assert metrics["chance"] == pytest.approx(12 / 36)
    assert metrics["chance_2d"] == pytest.approx(10 / 30)
    assert metrics["coverage_3d"] == 1.0
    assert metrics["coverage_2d"] == pytest.approx(expected["keys_2d"] / expected["instances"])
    assert metrics["labels"] == "gt"
    for name in ("knn_3d", "linear_3d", "knn_2d", "linear_2d", "knn_concat", "linear_concat"):
        assert metrics[name] >= 0.95, (name, metrics[name])


def test_probe_run_gt_segmenter_and_no_2d(tmp_path):
    build_run(tmp_path / "run", predicted=False, with_2d=False)
    metrics = probe_run(tmp_path / "run")
    assert metrics["matched"] == 37 and metrics["unmatched"] == 0
    assert metrics["n_3d"] == 36 and metrics["knn_3d"] >= 0.95
    for name in ("knn_2d", "linear_2d", "knn_concat", "linear_concat", "n_2d", "n_concat", "coverage_2d"):
        assert metrics[name] is None


def test_probe_run_labels_come_from_the_matched_gt(tmp_path):
    """Labels by index instead of by box match would pair rotated instances with wrong classes."""
    build_run(tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # pretend the predicted file is the GT one: keys are then labelled by index, which is wrong here
    summary["files"]["gt_attributes"] = summary["files"]["attributes"] = {"val": "gt_attributes.pt"}
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
    wrong = probe_run(tmp_path / "run")
    assert wrong["knn_3d"] < 0.8


def test_probe_run_user_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="summary.json: not found"):
        probe_run(tmp_path)
    build_run(tmp_path / "run")
    (tmp_path / "run" / "feats2d.pt").unlink()
    with pytest.raises(DataError, match="feats2d.pt"):
        probe_run(tmp_path / "run")
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(DataError, match="boom"):
        probe_run(tmp_path / "run")
