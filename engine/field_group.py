"""Taichi fields that can be freed.

A plain ``ti.field(..., shape=...)`` lives in Taichi's global field tree until the
program ends: a long run that creates projectors (a reconstruction per case, a
dataset loop) grows without bound (an evaluation of 60 reconstructions reached
12 GB).  A :class:`FieldGroup` places its fields in an SNode tree of their own
(``ti.FieldsBuilder``) and destroys that tree on :meth:`release` or when the group
is garbage collected.  Hold the group as long as any of its fields is used.
"""
from __future__ import annotations


class FieldGroup:
    """Dense fields built together and freed together (see module doc).

    ``g = FieldGroup(ti); a = g.field(ti.f32, (n, m)); v = g.field(ti.f32, (k,), n=3); g.finalize()``.
    """

    def __init__(self, ti):
        self._ti = ti
        self._fb = ti.FieldsBuilder()
        self._tree = None
        self._finalized = False

    def field(self, dtype, shape, n: int | None = None):
        """A scalar field (or a field of ``n``-vectors) of ``shape``, placed in this group."""
        if self._finalized:
            raise RuntimeError("the group is finalized: build a new one for more fields")
        ti = self._ti
        f = ti.field(dtype) if n is None else ti.Vector.field(n, dtype)
        self._fb.dense(ti.axes(*range(len(shape))), tuple(int(s) for s in shape)).place(f)
        return f

    def finalize(self) -> "FieldGroup":
        """Allocate the fields (zero-filled); call once, after the last :meth:`field`."""
        self._tree = self._fb.finalize()
        self._finalized = True
        return self

    def release(self) -> None:
        """Free the fields' memory (they must not be used afterwards)."""
        tree, self._tree = self._tree, None
        if tree is not None:
            try:
                tree.destroy()
            except Exception:  # Taichi already reset (interpreter exit): nothing left to free
                pass

    def __del__(self):
        self.release()
