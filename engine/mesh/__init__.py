"""Triangle meshes: reading, validation, sphere and label-map surfaces, BVH, Taichi distance maps with vertex
gradients."""
from .bvh import BVH, build_bvh
from .mesh import Mesh, face_normals, from_labels, icosphere, load_mesh, make_mesh, merge_vertices, save_mesh, signed_volume, validate, vertex_components, vertex_normals
from .projector import MeshProjector
from .shapes import rod
from .subdivide import subdivide

__all__ = ["BVH", "Mesh", "MeshProjector", "build_bvh", "face_normals", "from_labels", "icosphere", "load_mesh", "make_mesh", "merge_vertices", "rod", "save_mesh",
           "signed_volume", "subdivide", "validate", "vertex_components", "vertex_normals"]
