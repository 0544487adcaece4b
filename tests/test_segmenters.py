"""Predicted-instance segmenters: Mask3D raw export, Chat-Scene's inst_seg .pt files, instance .npz."""

from __future__ import annotations

import builtins
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_class

from featurizer.errors import ConfigError, DataError
from featurizer.scene import Scene
from featurizer.segmenter.mask3d_inst_seg import Mask3DInstSeg
from featurizer.segmenter.instance_npz import InstanceNpz
from featurizer.segmenter.mask3d import Mask3DExport, read_labels_tsv

SCENE = "scene0011_00"
N = 500

TSV = """id\traw_category\tcategory\tcount\tnyu40id
1\twall\twall\t8277\t1
2\tchair\tchair\t4646\t5
3\tfloor\tfloor\t11139\t2
5\tsofa chair\tarmchair\t100\t6
7\tkitchen table\ttable\t300\t7
"""


def make_scene(n: int = N, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    return Scene(
        scene_id=SCENE,
        points=rng.uniform(-2, 2, size=(n, 3)),
        colors=rng.integers(0, 256, size=(n, 3)),
        split="val",
    )


# -- Mask3D raw export ----------------------------------------------------------------------------

# (class id, score, vertex ids) in export-file order
MASK3D_PREDS = [
    (2, 0.50, np.arange(0, 40)),
    (7, 0.95, np.arange(100, 180)),
    (1, 0.10, np.arange(200, 260)),
    (5, 0.95, np.arange(300, 305)),  # ties with the second line: keeps file order after it
    (3, 0.70, np.array([], dtype=np.int64)),  # empty mask
]


def write_mask3d_export(root: Path, preds=MASK3D_PREDS, n: int = N, split: str = "val", scene: str = SCENE,
                        tsv: str | None = TSV) -> Path:
    """A raw Mask3D export of ``scene`` (preds: (class id, score, point ids)) in ``root/split``, and the labels
    tsv in ``root`` unless ``tsv`` is None."""
    out = root / split
    (out / "pred_mask").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (class_id, score, ids) in enumerate(preds):
        mask = np.zeros(n, dtype=np.int64)
        mask[ids] = 1
        np.savetxt(out / "pred_mask" / f"{scene}_{k}.txt", mask, fmt="%d")
        lines.append(f"pred_mask/{scene}_{k}.txt {class_id} {score:.6f}")
    (out / f"{scene}.txt").write_text("\n".join(lines) + "\n")
    if tsv is not None:
        (root / "scannetv2-labels.combined.tsv").write_text(tsv)
    return out


def test_labels_tsv_maps_column0_to_column2(tmp_path):
    (tmp_path / "l.tsv").write_text(TSV)
    expected = {1: "wall", 2: "chair", 3: "floor", 5: "armchair", 7: "table"}
    assert read_labels_tsv(tmp_path / "l.tsv") == expected


def test_mask3d_instances_sorted_thresholded_truncated(tmp_path):
    write_mask3d_export(tmp_path)
    seg = Mask3DExport(str(tmp_path), splits=["val"], labels_tsv=str(tmp_path / "scannetv2-labels.combined.tsv"),
                       label_set="tsv", score_threshold=0.3, max_instances=3)
    scene = make_scene()
    with pytest.warns(UserWarning, match="empty mask"):
        seg.segment(scene)
    # scores >= 0.3: 0.95 (table), 0.95 (armchair, later in file), 0.70 (empty floor), 0.50 (chair) -> first 3
    assert [i.label for i in scene.instances] == ["table", "armchair", "floor"]
    assert [i.score for i in scene.instances] == pytest.approx([0.95, 0.95, 0.70])
    np.testing.assert_array_equal(scene.instances[0].point_ids, np.arange(100, 180))
    np.testing.assert_array_equal(scene.instances[1].point_ids, np.arange(300, 305))
    assert scene.instances[2].point_ids.shape == (0,)
    assert any("empty mask" in n for n in scene.notes)
    assert seg.name == "mask3d"


def test_mask3d_all_instances_and_labels_dir(tmp_path):
    write_mask3d_export(tmp_path)
    # labels_tsv may name the folder holding the tsv (the YAML passes the dataset root)
    seg = Mask3DExport(str(tmp_path), labels_tsv=str(tmp_path), label_set="tsv", max_instances=None)
    with pytest.warns(UserWarning):
        instances = seg.predict(make_scene())
    expected = sorted(MASK3D_PREDS, key=lambda p: -p[1])
    assert [i.score for i in instances] == pytest.approx([p[1] for p in expected])
    assert [i.label for i in instances] == ["table", "armchair", "floor", "chair", "wall"]
    for inst, (_, _, ids) in zip(instances, expected):
        np.testing.assert_array_equal(inst.point_ids, ids)
        assert inst.point_ids.dtype == np.int64


def test_mask3d_labels_tsv_fallback_to_root_parent(tmp_path):
    root = tmp_path / "mask3d"
    write_mask3d_export(root)
    (root / "scannetv2-labels.combined.tsv").rename(tmp_path / "scannetv2-labels.combined.tsv")
    seg = Mask3DExport(str(root), labels_tsv=None, label_set="tsv", max_instances=2)
    assert seg.labels_path() == tmp_path / "scannetv2-labels.combined.tsv"
    (tmp_path / "scannetv2-labels.combined.tsv").unlink()
    with pytest.raises(ConfigError, match="labels_tsv"):
        Mask3DExport(str(root), labels_tsv=None, label_set="tsv").check_global()


def test_mask3d_wrong_line_count_names_mask_file(tmp_path):
    out = write_mask3d_export(tmp_path, n=N)
    seg = Mask3DExport(str(tmp_path), labels_tsv=str(tmp_path), label_set="tsv")
    with pytest.raises(DataError) as err:
        seg.predict(make_scene(n=N + 7))
    assert err.value.path == out / "pred_mask" / f"{SCENE}_1.txt"  # the top-scored mask is read first
    assert "500" in str(err.value) and "507" in str(err.value)


def test_mask3d_unknown_class_id_names_txt(tmp_path):
    out = write_mask3d_export(tmp_path, preds=MASK3D_PREDS + [(99, 0.2, np.arange(3))])
    seg = Mask3DExport(str(tmp_path), labels_tsv=str(tmp_path), label_set="tsv")
    with pytest.raises(DataError, match="line 6: class id 99 is not in") as err:
        seg.predict(make_scene())
    assert err.value.path == out / f"{SCENE}.txt"


def test_mask3d_check_missing_scene_txt(tmp_path):
    out = write_mask3d_export(tmp_path)
    seg = Mask3DExport(str(tmp_path), labels_tsv=str(tmp_path), label_set="tsv")
    seg.check_global()
    seg.check_scene(SCENE, N)  # present: no error
    with pytest.raises(DataError, match="missing") as err:
        seg.check_scene("scene0999_00", N)
    assert err.value.path == out / "scene0999_00.txt"


def test_mask3d_malformed_mask_value(tmp_path):
    out = write_mask3d_export(tmp_path)
    mask = out / "pred_mask" / f"{SCENE}_1.txt"
    lines = mask.read_text().splitlines()
    lines[3] = "x"
    mask.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        Mask3DExport(str(tmp_path), labels_tsv=str(tmp_path), label_set="tsv").predict(make_scene())
    assert err.value.path == mask


def test_mask3d_requires_root():
    with pytest.raises(ConfigError, match="segmenter.root"):
        Mask3DExport(None)


# -- Chat-Scene mask3d_inst_seg .pt -----------------------------------------------------------------


def test_inst_seg_reads_list_in_order(tmp_path):
    entries = [
        {"label": "chair", "segments": [5, 6, 7, 499]},
        {"label": "table", "segments": torch.arange(10, 20)},
        {"label": "wall", "segments": [], "score": 0.25},
    ] + [{"label": f"obj{i}", "segments": [i]} for i in range(5)]
    torch.save(entries, tmp_path / f"{SCENE}.pt")
    seg = Mask3DInstSeg(str(tmp_path), max_instances=6)
    seg.check_global()
    scene = make_scene()
    with pytest.warns(UserWarning, match="empty"):
        seg.segment(scene)
    assert [i.label for i in scene.instances] == ["chair", "table", "wall", "obj0", "obj1", "obj2"]
    np.testing.assert_array_equal(scene.instances[0].point_ids, [5, 6, 7, 499])
    np.testing.assert_array_equal(scene.instances[1].point_ids, np.arange(10, 20))
    assert scene.instances[2].point_ids.shape == (0,)
    assert scene.instances[0].score is None and scene.instances[2].score == 0.25
    assert seg.name == "mask3d"


class _Payload:
    """Unpickling this would run ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_inst_seg_refuses_arbitrary_pickle_and_runs_no_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / f"{SCENE}.pt"
    payload = [{"label": "chair", "segments": [1, 2]}, _Payload(marker)]
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # the payload is live: a plain unpickle of the same bytes creates a (different) marker
    sanity = tmp_path / "sanity"
    pickle.loads(pickle.dumps([_Payload(sanity)]))
    assert sanity.exists()

    with pytest.raises(DataError, match="refusing to unpickle") as err:
        Mask3DInstSeg(str(tmp_path)).predict(make_scene())
    assert err.value.path == path
    assert "io.open" in str(err.value) and "weights_only=False" not in str(err.value)  # builtins.open
    assert not marker.exists()


def test_inst_seg_point_id_out_of_range(tmp_path):
    torch.save([{"label": "chair", "segments": [1, 2, N]}], tmp_path / f"{SCENE}.pt")
    with pytest.raises(DataError, match=f"point id {N} out of range") as err:
        Mask3DInstSeg(str(tmp_path)).predict(make_scene())
    assert err.value.path == tmp_path / f"{SCENE}.pt"


def test_inst_seg_bad_structure_and_missing(tmp_path):
    torch.save({"label": "chair"}, tmp_path / f"{SCENE}.pt")
    with pytest.raises(DataError, match="list of dicts"):
        Mask3DInstSeg(str(tmp_path)).predict(make_scene())
    torch.save([{"label": 3, "segments": [1]}], tmp_path / f"{SCENE}.pt")
    with pytest.raises(DataError, match="'label'"):
        Mask3DInstSeg(str(tmp_path)).predict(make_scene())
    with pytest.raises(DataError) as err:
        Mask3DInstSeg(str(tmp_path)).check_scene("scene0999_00", N)
    assert err.value.path == tmp_path / "scene0999_00.pt"


# -- instance .npz --------------------------------------------------------------------------------


def _csr(masks):
    offsets = np.cumsum([0] + [len(m) for m in masks]).astype(np.int64)
    return np.concatenate([np.asarray(m, dtype=np.int64) for m in masks]), offsets


def test_npz_dense_layout(tmp_path):
    rng = np.random.default_rng(1)
    ids = rng.integers(-1, 4, size=N)
    ids[ids == 2] = -1  # instance 2 has no vertex: an empty instance
    labels = np.array(["chair", "table", "lamp", "door"])
    np.savez(tmp_path / f"{SCENE}.npz", instance_ids=ids, labels=labels)
    seg = InstanceNpz(str(tmp_path), name="oneformer3d")
    scene = make_scene()
    with pytest.warns(UserWarning, match="empty"):
        seg.segment(scene)
    assert seg.name == "oneformer3d"
    assert [i.label for i in scene.instances] == ["chair", "table", "lamp", "door"]
    for k, inst in enumerate(scene.instances):
        np.testing.assert_array_equal(inst.point_ids, np.flatnonzero(ids == k))
        assert inst.score is None
    assert len(scene.instances[2].point_ids) == 0


def test_npz_csr_layout_with_scores(tmp_path):
    masks = [np.arange(0, 10), np.arange(5, 30), np.array([499, 3]), np.arange(100, 101), np.arange(50, 60)]
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.05])
    point_ids, offsets = _csr(masks)
    np.savez_compressed(tmp_path / f"{SCENE}.npz", point_ids=point_ids, offsets=offsets,
                        labels=np.array(["a", "b", "c", "d", "e"]), scores=scores)
    scene = make_scene()
    InstanceNpz(str(tmp_path), max_instances=4).segment(scene)
    # by score descending, ties in file order (b before d), then truncated to 4
    assert [i.label for i in scene.instances] == ["b", "d", "c", "a"]
    assert [i.score for i in scene.instances] == pytest.approx([0.9, 0.9, 0.5, 0.2])
    for inst, k in zip(scene.instances, [1, 3, 2, 0]):
        np.testing.assert_array_equal(inst.point_ids, masks[k])  # overlapping masks and order kept


def test_npz_csr_without_scores_keeps_order(tmp_path):
    masks = [np.arange(3), np.arange(7, 9)]
    point_ids, offsets = _csr(masks)
    np.savez(tmp_path / f"{SCENE}.npz", point_ids=point_ids, offsets=offsets, labels=np.array(["z", "a"]))
    instances = InstanceNpz(str(tmp_path)).predict(make_scene())
    assert [i.label for i in instances] == ["z", "a"]
    np.testing.assert_array_equal(instances[1].point_ids, [7, 8])


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(instance_ids=np.zeros(N - 1, int), labels=np.array(["a"])), "499 entries"),
        (dict(instance_ids=np.full(N, 3), labels=np.array(["a"])), "instance id 3 out of range"),
        (dict(point_ids=np.array([0, N]), offsets=np.array([0, 2]), labels=np.array(["a"])), f"point id {N}"),
        (dict(point_ids=np.arange(2), offsets=np.array([0, 1]), labels=np.array(["a", "b"])), "'offsets'"),
        (dict(point_ids=np.arange(2), offsets=np.array([0, 3]), labels=np.array(["a"])), "'offsets' must"),
        (dict(instance_ids=np.zeros(N, int), point_ids=np.array([0]), offsets=np.array([0, 1]),
              labels=np.array(["a"])), "not both"),
        (dict(instance_ids=np.zeros(N, int)), "'labels'"),
        (dict(instance_ids=np.zeros(N, int), labels=np.array(["a"]), scores=np.array([np.nan])), "'scores'"),
        (dict(instance_ids=np.zeros(N), labels=np.array(["a"])), "integer"),
    ],
)
def test_npz_validation_errors_name_the_file(tmp_path, arrays, match):
    np.savez(tmp_path / f"{SCENE}.npz", **arrays)
    with pytest.raises(DataError, match=match) as err:
        InstanceNpz(str(tmp_path)).predict(make_scene())
    assert err.value.path == tmp_path / f"{SCENE}.npz"


def test_npz_refuses_object_arrays_and_checks_presence(tmp_path):
    np.savez(tmp_path / f"{SCENE}.npz", instance_ids=np.zeros(N, int),
             labels=np.array(["a", None], dtype=object))
    with pytest.raises(DataError) as err:
        InstanceNpz(str(tmp_path)).predict(make_scene())
    assert err.value.path == tmp_path / f"{SCENE}.npz"
    with pytest.raises(DataError) as err:
        InstanceNpz(str(tmp_path)).check_scene("scene0999_00", N)
    assert err.value.path == tmp_path / "scene0999_00.npz"
    with pytest.raises(ConfigError, match="segmenter.name"):
        InstanceNpz(str(tmp_path), name="bad/name")


# -- the option files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, key, folder",
    [("mask3d", "mask3d_export", "mask3d_export"), ("mask3d_inst_seg", "mask3d_inst_seg", "mask3d_inst_seg"),
     ("instance_npz", "instance_npz", "instance_npz")],
)
def test_option_files_instantiate(tmp_path, option, key, folder):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "segmenter" / f"{option}.yaml"
    # default root: <paths.data_dir>/<folder> (mask3d: the dataset's <root>/mask3d_export); labels tsv:
    # the dataset root; split folders: the dataset's splits
    dataset = {"root": str(tmp_path / "scannet"), "splits": ["train", "val"]}
    cfg = OmegaConf.create({"segmenter": OmegaConf.load(conf), "paths": {"data_dir": str(tmp_path)},
                            "dataset": dataset})
    seg = instantiate(cfg.segmenter)
    default = tmp_path / "scannet" / folder if option == "mask3d" else tmp_path / folder
    assert Path(seg.root) == default and seg.max_instances == 100
    if option == "mask3d":
        assert seg.labels_tsv == tmp_path / "scannet" and seg.splits == ["train", "val"]
        assert seg.score_threshold == 0.0
    # a paths.<key> entry (conf/local) takes precedence
    cfg = OmegaConf.create({"segmenter": OmegaConf.load(conf), "dataset": dataset,
                            "paths": {"data_dir": "/nowhere", key: str(tmp_path / "x")}})
    seg = instantiate(cfg.segmenter)
    assert Path(seg.root) == tmp_path / "x"
    if option == "mask3d":
        assert seg.labels_tsv == tmp_path / "scannet"
    else:
        assert seg.name == ("npz" if option == "instance_npz" else "mask3d")
    with pytest.raises(ConfigError, match="segmenter.root"):
        get_class(OmegaConf.load(conf)["_target_"])(root=None)


@pytest.mark.parametrize("style", ["lf", "no_final_newline", "crlf", "spaces"])
def test_read_binary_mask_line_styles(tmp_path, style):
    from featurizer.segmenter.mask3d import read_binary_mask

    mask = np.random.default_rng(4).random(N) < 0.3
    text = "\n".join(str(int(v)) for v in mask) + "\n"
    text = {"lf": text, "no_final_newline": text[:-1], "crlf": text.replace("\n", "\r\n"),
            "spaces": text.replace("\n", " \n")}[style]
    (tmp_path / "m.txt").write_text(text, newline="")
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "m.txt", N), mask)
