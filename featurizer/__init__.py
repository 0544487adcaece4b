"""featurizer: per-instance 3D and multi-view 2D features of 3D scenes for 3D scene LLMs."""

__version__ = "0.1.0"
