"""Connectivity of triangle meshes: the undirected edge list and the uniform graph Laplacian.

Faces are ``(F, 3)`` vertex indices; nothing here looks at vertex positions.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse


def edges(faces) -> np.ndarray:
    """(E, 2) undirected edges, each once, as sorted vertex index pairs in lexicographic order."""
    f = np.asarray(faces)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def laplacian(faces, n: int) -> sparse.csr_matrix:
    """Uniform graph Laplacian ``L = I - D^-1 A`` (n, n) of the mesh's edges (``A`` adjacency, ``D`` degrees);
    every vertex must lie on an edge."""
    e = edges(faces)
    a = sparse.coo_matrix((np.ones(2 * len(e)), (np.concatenate([e[:, 0], e[:, 1]]),
                                                   np.concatenate([e[:, 1], e[:, 0]]))), shape=(n, n)).tocsr()
    deg = np.asarray(a.sum(1)).ravel()
    if np.any(deg == 0):
        raise ValueError(f"{int(np.sum(deg == 0))} vertices lie on no edge: the Laplacian is undefined there")
    return (sparse.identity(n) - sparse.diags(1.0 / deg) @ a).tocsr()
