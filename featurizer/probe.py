"""Feature-quality probe of a run: how well its features separate object classes.

:func:`probe` takes a run's features and attributes (in memory, as :func:`featurizer.writer.merge`
returns them) and ground-truth labels: predicted instances are matched to ground-truth boxes by 3D
IoU (:func:`match_to_gt`), then a cosine k-nearest-neighbour classifier and a linear probe are
cross-validated with folds split by scene, for the 3D, the 2D and the concatenated features.
:func:`probe_run` does the same for a run folder on disk (``summary.json`` and the Chat-Scene files
it names), for sweeps summarised after the fact. The numbers go to ``<run>/metrics.json``.

Pure numpy/torch (no sklearn); every result is deterministic.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featurizer.annotations.match import iou_matrix
from featurizer.errors import DataError
from featurizer.files import atomic_write_json, read_json
from featurizer.ptfile import load_pt

log = logging.getLogger(__name__)

METRIC_NAMES = ("knn_3d", "linear_3d", "knn_2d", "linear_2d", "knn_concat", "linear_concat")
MODALITIES = ("3d", "2d", "concat")
MIN_CLASS_SAMPLES = 2  # classes with fewer samples are dropped from a probe


# ---------------------------------------------------------------------------------------------
# Cross-validation folds and classifiers
# ---------------------------------------------------------------------------------------------


def group_folds(groups, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation splits where no group (scene) is in both the train and test part of a fold.

    groups: (N,) group id per sample (any hashable: scene ids).
    Returns a list of ``(train_idx, test_idx)`` int64 index arrays. With at least ``folds``
    distinct groups, groups are dealt to ``folds`` folds like sklearn's GroupKFold (largest group
    first, each to the fold with the fewest samples so far; ties to the lower fold and to the
    group that sorts first), so folds have about the same size. With fewer groups than ``folds``
    it is leave-one-group-out. Fewer than 2 groups: no split is possible, returns ``[]``.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    groups = np.asarray(groups)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n_groups = len(names)
    if n_groups < 2:
        return []
    if n_groups <= folds:
        fold_of_group = np.arange(n_groups)
        n_folds = n_groups
    else:
        n_folds = folds
        fold_of_group = np.empty(n_groups, dtype=np.int64)
        fold_sizes = np.zeros(n_folds, dtype=np.int64)
        # stable sort by decreasing size: equal sizes keep the order of the sorted group names
        for g in np.argsort(-counts, kind="stable"):
            f = int(np.argmin(fold_sizes))
            fold_of_group[g] = f
            fold_sizes[f] += counts[g]
    sample_fold = fold_of_group[inverse]
    splits = []
    for f in range(n_folds):
        test = np.flatnonzero(sample_fold == f)
        train = np.flatnonzero(sample_fold != f)
        if len(test) and len(train):
            splits.append((train.astype(np.int64), test.astype(np.int64)))
    return splits


def _encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels of any type -> (class names (C,), (N,) int64 codes)."""
    names, codes = np.unique(np.asarray(y), return_inverse=True)
    return names, codes.reshape(-1).astype(np.int64)


def _as_matrix(X) -> torch.Tensor:
    X = torch.as_tensor(np.asarray(X, dtype=np.float32) if not torch.is_tensor(X) else X)
    X = X.detach().to(torch.float32).cpu()
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(X.shape)}")
    return X


def _check_inputs(X, y, groups) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    X = _as_matrix(X)
    _, codes = _encode_labels(y)
    groups = np.asarray(groups)
    if not (len(X) == len(codes) == len(groups)):
        raise ValueError(f"X, y, groups differ in length: {len(X)}, {len(codes)}, {len(groups)}")
    return X, codes, groups


def _knn_predict(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int, n_classes: int
) -> torch.Tensor:
    """Cosine kNN majority vote. train_x (M, D), train_y (M,), test_x (T, D) -> (T,) predicted codes.

    Ties between classes are broken by the summed similarity of their neighbours, then by the
    lower class code. Test rows are processed in chunks so memory stays bounded.
    """
    train_x = torch.nn.functional.normalize(train_x, dim=1)
    test_x = torch.nn.functional.normalize(test_x, dim=1)
    k = min(k, len(train_x))
    out = []
    chunk = max(1, (1 << 24) // max(1, len(train_x)))  # ~64 MiB of similarities per chunk
    for start in range(0, len(test_x), chunk):
        sim = test_x[start : start + chunk] @ train_x.T  # (t, M)
        top_sim, top_idx = sim.topk(k, dim=1)  # sorted; equal similarities -> implementation order
        votes = torch.zeros(len(sim), n_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_y[top_idx], torch.ones_like(top_sim, dtype=torch.float64))
        tie = torch.zeros_like(votes)
        # similarities are in [-1, 1]; (sim + 1) / (2k + 2) < 1/2 summed over k neighbours < 1 vote
        tie.scatter_add_(1, train_y[top_idx], (top_sim.double() + 1.0) / (2.0 * k + 2.0))
        out.append((votes + tie).argmax(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def knn_accuracy(X, y, groups, k: int = 5, folds: int = 5) -> float:
    """Cross-validated cosine k-nearest-neighbour accuracy, folds split by scene.

    X: (N, D) features; y: (N,) labels (any type); groups: (N,) scene id per sample.
    Folds come from :func:`group_folds` (leave-one-scene-out when there are fewer scenes than
    ``folds``). Returns the accuracy pooled over all test samples, or NaN when no split exists
    (fewer than 2 scenes). Labels are used as given: drop rare classes before (see
    :func:`probe_run`).
    """
    return _cross_validated_accuracy(
        X, y, groups, folds,
        lambda tx, ty, sx, n_classes: _knn_predict(tx, ty, sx, k, n_classes),
        lambda X, n_classes, n_splits: float(X.shape[0]) ** 2 * X.shape[1] / n_splits,
    )


def _cross_validated_accuracy(X, y, groups, folds: int, predict, work) -> float:
    """Accuracy pooled over the test parts of :func:`group_folds` splits, NaN when there is none.

    predict(train_x, train_y, test_x, n_classes) -> (T,) predicted codes;
    work(X, n_classes, n_splits) -> multiply-adds per fold, for :func:`_single_thread_if_small`.
    """
    X, codes, groups = _check_inputs(X, y, groups)
    splits = group_folds(groups, folds)
    if not splits:
        return float("nan")
    n_classes = int(codes.max()) + 1
    y_t = torch.from_numpy(codes)
    correct = total = 0
    with _single_thread_if_small(work(X, n_classes, len(splits))):
        for train, test in splits:
            pred = predict(X[train], y_t[train], X[test], n_classes)
            correct += int((pred == y_t[test]).sum())
            total += len(test)
    return correct / total


@contextmanager
def _single_thread_if_small(work: float, limit: float = 2e7):
    """Run tiny problems (``work`` ~ multiply-adds per step) on one torch thread: thread hand-offs
    cost more than such matrices, badly so on a loaded machine. Restores the thread count."""
    before = torch.get_num_threads()
    small = work < limit and before > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _fit_logistic(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int, weight_decay: float, seed: int
) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised (M, D) features, full-batch L-BFGS."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(model.weight.shape, generator=gen) * 0.01)
        model.bias.zero_()
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=epochs, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = loss + 0.5 * weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def linear_probe_accuracy(
    X, y, groups, folds: int = 5, epochs: int = 100, seed: int = 0, weight_decay: float = 1e-3
) -> float:
    """Cross-validated accuracy of a linear probe, folds split by scene.

    X: (N, D) features; y: (N,) labels; groups: (N,) scene id per sample. Per fold, features are
    standardised with the train part's mean and std, then a multinomial logistic regression
    (torch, L2 ``weight_decay``, ``epochs`` L-BFGS iterations, weights initialised from ``seed``)
    is fitted on the train part and scored on the test part. Returns the accuracy pooled over all
    test samples, or NaN when no split exists (fewer than 2 scenes).
    """

    def predict(train_x, train_y, test_x, n_classes):
        mean = train_x.mean(dim=0)
        std = train_x.std(dim=0, unbiased=False).clamp_min(1e-6)
        with torch.enable_grad():
            model = _fit_logistic((train_x - mean) / std, train_y, n_classes, epochs, weight_decay, seed)
        with torch.no_grad():
            return model((test_x - mean) / std).argmax(dim=1)

    return _cross_validated_accuracy(
        X, y, groups, folds, predict,
        lambda X, n_classes, n_splits: float(X.shape[0]) * X.shape[1] * n_classes,
    )


# ---------------------------------------------------------------------------------------------
# Matching predicted instances to ground truth
# ---------------------------------------------------------------------------------------------


def match_to_gt(pred_locs, gt_locs, threshold: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching of predicted to ground-truth boxes by 3D IoU.

    pred_locs: (P, 6), gt_locs: (G, 6) aligned boxes (center xyz, size xyz).
    IoU is Chat-Scene's (:func:`featurizer.annotations.match.iou_matrix`, as the grounding upper bound's).
    Pairs with IoU >= ``threshold`` are taken highest IoU first (ties: lower prediction index,
    then lower GT index), each prediction and each GT box at most once.
    Returns (P,) int64: the matched GT index, or -1.
    """
    pred = np.asarray(pred_locs, dtype=np.float64).reshape(-1, 6)
    gt = np.asarray(gt_locs, dtype=np.float64).reshape(-1, 6)
    match = np.full(len(pred), -1, dtype=np.int64)
    if len(pred) == 0 or len(gt) == 0:
        return match
    iou = iou_matrix(pred, gt)
    order = np.argsort(-iou, axis=None, kind="stable")  # row-major: ties keep (pred, gt) order
    gt_used = np.zeros(len(gt), dtype=bool)
    for flat in order:
        p, g = divmod(int(flat), len(gt))
        if iou[p, g] < threshold:
            break
        if match[p] < 0 and not gt_used[g]:
            match[p] = g
            gt_used[g] = True
    return match


# ---------------------------------------------------------------------------------------------
# Probe of one run
# ---------------------------------------------------------------------------------------------


def read_json_object(path: Path) -> dict:
    """A run's JSON file (summary, metrics, timings) as a dict; DataError naming the file otherwise."""
    return read_json(path, "not found", expect=dict)


def _load_pt(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(path, f"{what} file named in summary.json not found")
    data = load_pt(path)
    if not isinstance(data, dict):
        raise DataError(path, f"{what} must be a dict, is {type(data).__name__}")
    return data


def _attributes_labels(attrs: dict, path: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """{scene_id: (labels, (I, 6) float64 locs)} from a Chat-Scene attributes dict."""
    out = {}
    for scene_id, entry in attrs.items():
        if not isinstance(entry, dict) or "objects" not in entry or "locs" not in entry:
            raise DataError(path, f"scene {scene_id!r} must be a dict with 'objects' and 'locs'")
        labels = [str(x) for x in entry["objects"]]
        locs = np.asarray(torch.as_tensor(entry["locs"]).double().numpy()).reshape(-1, 6)
        if len(locs) != len(labels):
            raise DataError(path, f"scene {scene_id!r}: {len(labels)} objects but {len(locs)} locs")
        out[str(scene_id)] = (labels, locs)
    return out


def _drop_rare(keys: list[str], labels: list[str], scenes: list[str]):
    counts = Counter(labels)
    keep = [i for i, lab in enumerate(labels) if counts[lab] >= MIN_CLASS_SAMPLES]
    return [keys[i] for i in keep], [labels[i] for i in keep], [scenes[i] for i in keep]


def _stack(feats: dict, keys: list[str], path: Path) -> torch.Tensor:
    rows = []
    for key in keys:
        v = torch.as_tensor(feats[key]).detach().to(torch.float32).reshape(-1)
        rows.append(v)
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise DataError(path, f"feature vectors have different lengths: {sorted(dims)}")
    return torch.stack(rows) if rows else torch.zeros(0, 0)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def probe(
    feats3d: dict | None, feats2d: dict | None, attributes: dict, gt_attributes: dict | None,
    instances: int | None = None, k: int = 5, folds: int = 5, epochs: int = 100, seed: int = 0,
    iou_threshold: float = 0.5, source: Path | str = "run",
) -> dict:
    """Probe a run's features (in memory) against ground-truth labels.

    feats3d / feats2d: ``{key: (D,) tensor}`` or None for a modality the run has not. attributes:
    the instances' ``{scene: {"objects", "locs"}}``; gt_attributes: the GT ones (the same dict for
    ground-truth instances), None when there are none (test split). Labels are the ground truth:
    for a predicted segmenter, each predicted instance takes the label of the GT box it matches
    (:func:`match_to_gt`, IoU >= ``iou_threshold``); unmatched ones are excluded and counted. Per
    modality ("3d", "2d", "concat" = keys with both, each part L2-normalised, then concatenated),
    classes with fewer than 2 samples are dropped, then :func:`knn_accuracy` and
    :func:`linear_probe_accuracy` run. source: named in errors (the run folder or file).

    Returns ``{"knn_3d", "linear_3d", "knn_2d", "linear_2d", "knn_concat", "linear_concat",
    "n_3d", "n_2d", "n_concat", "n_classes", "chance", "coverage_3d", "coverage_2d", "matched",
    "unmatched"}`` plus ``"n_classes_<m>"``, ``"chance_<m>"`` per modality and ``"labels"`` ("gt"
    or null). ``n_classes``/``chance`` (majority-class rate) are those of the 3D set (the 2D set
    when there are no 3D features). A missing modality, or one with fewer than 2 scenes or 2
    classes, gives null accuracies. No GT attributes (test split): all accuracies null.
    """
    source = Path(source)
    feats = {"3d": feats3d, "2d": feats2d}
    pred = _attributes_labels(attributes, source)
    gt = None
    if gt_attributes is not None:
        gt = pred if gt_attributes is attributes else _attributes_labels(gt_attributes, source)

    # label of every predicted instance key (GT label of its match)
    key_label: dict[str, str] = {}
    key_scene: dict[str, str] = {}
    matched = unmatched = 0
    for scene_id, (labels, locs) in pred.items():
        if gt is None:
            break
        if gt is pred:
            idx = np.arange(len(labels))
            gt_labels = labels
        elif scene_id in gt:
            gt_labels, gt_locs = gt[scene_id]
            idx = match_to_gt(locs, gt_locs, iou_threshold)
        else:
            idx = np.full(len(labels), -1)
            gt_labels = []
        for i, g in enumerate(idx):
            if g < 0:
                unmatched += 1
                continue
            matched += 1
            key = f"{scene_id}_{i:02}"
            key_label[key] = gt_labels[int(g)]
            key_scene[key] = scene_id

    metrics: dict[str, Any] = {name: None for name in METRIC_NAMES}
    sets: dict[str, list[str] | None] = {}
    for mod in ("3d", "2d"):
        sets[mod] = None if feats[mod] is None else [k_ for k_ in key_label if k_ in feats[mod]]
    if feats["3d"] is not None and feats["2d"] is not None:
        sets["concat"] = [k_ for k_ in key_label if k_ in feats["3d"] and k_ in feats["2d"]]
    else:
        sets["concat"] = None

    for mod in MODALITIES:
        keys = sets[mod]
        metrics[f"n_{mod}"] = None
        metrics[f"n_classes_{mod}"] = None
        metrics[f"chance_{mod}"] = None
        if keys is None or gt is None:
            continue
        keys, labels, scenes = _drop_rare(
            keys, [key_label[k_] for k_ in keys], [key_scene[k_] for k_ in keys]
        )
        metrics[f"n_{mod}"] = len(keys)
        counts = Counter(labels)
        metrics[f"n_classes_{mod}"] = len(counts)
        metrics[f"chance_{mod}"] = max(counts.values()) / len(keys) if keys else None
        if len(counts) < 2 or len(set(scenes)) < 2:
            continue
        if mod == "concat":
            x3 = torch.nn.functional.normalize(_stack(feats["3d"], keys, source), dim=1)
            x2 = torch.nn.functional.normalize(_stack(feats["2d"], keys, source), dim=1)
            X = torch.cat([x3, x2], dim=1)
        else:
            X = _stack(feats[mod], keys, source)
        metrics[f"knn_{mod}"] = _finite_or_none(knn_accuracy(X, labels, scenes, k=k, folds=folds))
        metrics[f"linear_{mod}"] = _finite_or_none(
            linear_probe_accuracy(X, labels, scenes, folds=folds, epochs=epochs, seed=seed)
        )

    main = "3d" if feats["3d"] is not None else "2d"
    metrics["n_classes"] = metrics[f"n_classes_{main}"] or 0
    metrics["chance"] = metrics[f"chance_{main}"]
    if instances is None:
        instances = sum(len(labels) for labels, _ in pred.values())
    for mod in ("3d", "2d"):
        metrics[f"coverage_{mod}"] = len(feats[mod]) / instances if feats[mod] is not None and instances else None
    metrics["matched"] = matched
    metrics["unmatched"] = unmatched
    metrics["labels"] = None if gt is None else "gt"
    return metrics


def probe_run(run_dir, **kwargs) -> dict:
    """:func:`probe` of a run folder on disk (``summary.json`` and the files it names); writes and
    returns ``<run_dir>/metrics.json``. kwargs: those of :func:`probe`."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    summary = read_json_object(summary_path)
    if summary.get("status") != "ok":
        raise DataError(summary_path, f"run status is {summary.get('status')!r}: {summary.get('error')}")
    files = summary.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("attributes"), dict) or not files["attributes"]:
        raise DataError(summary_path, "'files' must name the attributes file of at least one split")

    def attributes(role: str) -> dict | None:  # every split's file (not "all": the others hold it)
        names = {split: name for split, name in (files.get(role) or {}).items() if split != "all"}
        out = {}
        for name in names.values():
            out.update(_load_pt(run_dir / name, role))
        return out if names else None

    loaded = {role: _load_pt(run_dir / files[role], role) if files.get(role) else None
              for role in ("feats3d", "feats2d")}
    loaded["attributes"] = attributes("attributes")
    same = files.get("gt_attributes") == files["attributes"]
    loaded["gt_attributes"] = loaded["attributes"] if same else attributes("gt_attributes")
    metrics = probe(loaded["feats3d"], loaded["feats2d"], loaded["attributes"], loaded["gt_attributes"],
                    instances=summary.get("instances"), source=run_dir, **kwargs)
    atomic_write_json(metrics, run_dir / "metrics.json")
    return metrics
