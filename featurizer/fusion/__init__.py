"""Fusion strategies: per-view region pooling of patch tokens and view weighting (one module each).

- ``paper.PaperFusion``: Chat-Scene's reference (box of the hull, hull-area weights), bit-identical given the
  same tokens.
- ``mean.MeanFusion``: box pooling with the correct patch geometry, equal view weights.
- ``mask_pool.MaskPoolFusion``: tokens weighted by the instance's projected points (the default).
- ``topk_views.TopKViewsFusion``: mask pooling over the k views that see the most points.
- ``crop_encode.CropEncodeFusion``: global embeddings of multi-scale crops in the k best views.

All consume the same depth-tested mapping (``featurizer.geometry.mapping``) through ``base.ViewBatch``.
"""
