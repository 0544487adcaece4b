"""Synthetic scenes written to disk in exactly the layout of a dataset (ScanNet by default; ScanNet++,
3RScan, Matterport3D or nerfstudio with ``dataset.layout``), then read by that dataset's reader.

Each scene is a room (floor and four walls) with furniture of ScanNet categories, each object built
from subdivided boxes and cylinders with a class-typical shape, size and colour, placed without
overlap, in a raw frame such that ``axisAlignment @ raw = aligned`` (as in ScanNet); RGB-D frames are
rendered from the mesh along an ellipse inside the room. One module per job:

- :mod:`.mesh`: mesh primitives (grids, boxes, cylinders);
- :mod:`.furniture`: the object classes (raw labels, sizes, colours, shapes) and their segments;
- :mod:`.scene`: the model of one scene (room, placement, mesh, alignment, ground truth, cameras);
- :mod:`.layout`: writing a model in the ScanNet layout (ply, meta, segs, aggregation, frames, .sens);
- :mod:`.layout_scannetpp`, :mod:`.layout_rscan`, :mod:`.layout_matterport`, :mod:`.layout_nerfstudio`:
  writing a model in the other datasets' layouts, with their conventions;
- :mod:`.generate`: seeded scenes -> a dataset folder of one layout (labels tsv, split files);
- :mod:`.reader`: :class:`~featurizer.dataset.synthetic.reader.SyntheticDataset`, the reader of a layout
  (:class:`~featurizer.dataset.synthetic.reader.SyntheticScanNet`, ...) that generates its dataset in
  ``prepare()``.
"""
