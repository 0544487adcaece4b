"""Geometry of the 2D stage, one file per job, each algorithm next to its compiled (numba) twin:

- ``mapping.py``: the depth-tested point -> pixel mapping (DESIGN.md section 5), the voxel culling
  (:class:`~featurizer.geometry.mapping.VoxelCuller`) and its max-depth pyramid, and their kernels;
- ``hulls.py``: convex hull areas and boxes of many pixel sets at once (the ``paper`` fusion), and
  their kernel;
- ``pooling.py``: patch-grid helpers of the fusion strategies (boxes of pixel sets, token sums over
  boxes, the frame rectangles of patch cells);
- ``backend.py``: whether the torch code or the compiled kernels run (``geometry_backend``).

Import from the modules (``from featurizer.geometry.mapping import VoxelCuller``); the backend check
is also here, as ``featurizer.geometry.check_backend``, for run.py.
"""

from featurizer.geometry.backend import check_backend

__all__ = ["check_backend"]
