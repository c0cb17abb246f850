"""NormalCrafter: temporally consistent video normals from a video diffusion prior."""
__version__ = "0.1.0"
