"""Triangle meshes: reading, validation, sphere and label-map surfaces (the distance-map renderer is to come)."""
from .mesh import Mesh, from_labels, icosphere, load_mesh, make_mesh, merge_vertices, save_mesh, signed_volume, validate

__all__ = ["Mesh", "from_labels", "icosphere", "load_mesh", "make_mesh", "merge_vertices", "save_mesh",
           "signed_volume", "validate"]
