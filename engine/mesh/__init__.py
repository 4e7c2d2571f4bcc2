"""Triangle meshes: reading, validation, sphere and label-map surfaces, BVH, Taichi distance maps with vertex
gradients."""
from .bvh import BVH, build_bvh
from .mesh import Mesh, face_normals, from_labels, icosphere, load_mesh, make_mesh, merge_vertices, save_mesh, signed_volume, validate, vertex_components, vertex_normals
from .offset import offset_surface, offset_surface_vjp
from .projector import MeshProjector
from .shapes import rod
from .subdivide import subdivide
from .topology import edges, laplacian

__all__ = ["BVH", "Mesh", "MeshProjector", "build_bvh", "edges", "face_normals", "from_labels", "icosphere", "laplacian", "load_mesh", "make_mesh", "merge_vertices", "offset_surface", "offset_surface_vjp", "rod", "save_mesh",
           "signed_volume", "subdivide", "validate", "vertex_components", "vertex_normals"]
