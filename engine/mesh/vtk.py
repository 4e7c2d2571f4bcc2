"""VTK surface meshes in NumPy: legacy ``.vtk`` POLYDATA and XML ``.vtp`` PolyData, read and written.

meshio (the engine's reader for the other mesh formats) reads no PolyData: its legacy reader refuses
``DATASET POLYDATA`` and its XML reader only ``UnstructuredGrid``.  So PolyData is parsed here, with only NumPy and
the standard library (xml, base64, zlib, lzma), and unstructured grids are handed to meshio through
:func:`read_meshio`, the adapter that turns any file meshio reads into triangles (or an InputError naming the file).

Read (:func:`read_vtk`, the format is told by the content, not the suffix):

* legacy ``.vtk``, ``DATASET POLYDATA``, ASCII or BINARY (big-endian, as the format
  prescribes), cells in the classic ``n i0 i1 ...`` layout (file versions up to 4.2) or
  the ``OFFSETS`` / ``CONNECTIVITY`` layout of version 5.x; ``FIELD`` and ``METADATA``
  blocks are skipped; point and cell attributes (``POINT_DATA``, ``CELL_DATA``) are
  ignored;
* XML ``.vtp`` (``<VTKFile type="PolyData">``), every piece, with data arrays in
  ``ascii``, inline ``binary`` (base64) or ``appended`` data (``raw`` or ``base64``),
  uncompressed or compressed (``vtkZLibDataCompressor``, ``vtkLZMADataCompressor``),
  ``UInt32`` or ``UInt64`` headers, either byte order;
* unstructured grids, legacy ``DATASET UNSTRUCTURED_GRID`` or XML ``<VTKFile type="UnstructuredGrid">`` (``.vtu``):
  their triangle, quad and polygon cells, read by meshio (:func:`read_meshio`, which
  :func:`engine.mesh.load_mesh` also uses for the other formats meshio brings).

Polygons with more than three vertices are fan-triangulated ``(p0, pk, pk+1)`` (exact
for convex polygons, the usual quads and n-gons of surface meshes); triangle strips
are split the way VTK does (odd triangles swap their first two points, so the winding
is kept) and the degenerate triangles that join strips are dropped.  Vertices and
lines are ignored.  A file that is not VTK, another dataset type (e.g.
``STRUCTURED_POINTS``), volume cells, no points, no polygons, or damaged
or truncated data raise :class:`~engine.errors.InputError` (a ValueError) naming the
file and the problem.

Write (:func:`write_vtk_legacy`, :func:`write_vtp`): a polygon mesh in any of the
PolyData variants above (used by :func:`engine.mesh.save_mesh` and by the tests).
"""
import base64
import binascii
import importlib
import lzma
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError

# legacy type names -> NumPy codes (big-endian in BINARY files).  "vtkIdType" is written as 32-bit int by VTK's
# legacy writer; "long" is taken as 64 bits (Linux/macOS VTK builds).
LEGACY_TYPES = {"unsigned_char": "u1", "char": "i1", "unsigned_short": "u2", "short": "i2", "unsigned_int": "u4",
                "int": "i4", "unsigned_long": "u8", "long": "i8", "float": "f4", "double": "f8",
                "vtktypeint64": "i8", "vtktypeuint64": "u8", "vtkidtype": "i4", "bit": "bit"}
XML_TYPES = {"Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
             "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8"}
COMPRESSORS = {"vtkZLibDataCompressor": zlib.decompress, "vtkLZMADataCompressor": lzma.decompress}
_BLOCK = 1 << 15  # uncompressed block size of compressed arrays, as VTK writes them


# --------------------------------------------------------------------------------------------------- reading
def read_vtk(path):
    """Vertices and triangles of a VTK polygon mesh (legacy ``.vtk`` POLYDATA or XML ``.vtp``), or of the surface
    cells of a VTK unstructured grid (legacy or XML ``.vtu``, read by meshio).

    Returns
    -------
    vertices : (V, 3) float64, the file's coordinates (mm for the engine)
    faces : (F, 3) int64 triangles (polygons fan-triangulated, strips split), not validated
    """
    p = Path(path)
    data = p.read_bytes()
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:22].lower() == b"# vtk datafile version":
        reader = _LegacyReader(data, p.name)
        kind = reader.dataset()
        if kind == "UNSTRUCTURED_GRID":
            return _unstructured(p, "vtk")
        if kind != "POLYDATA":
            reader.fail(f"unsupported VTK dataset type {kind}: only POLYDATA and UNSTRUCTURED_GRID (surface cells) "
                        "are read; extract the surface first (e.g. ParaView's Extract Surface)")
        points, polys, strips = reader.read()
    elif head.startswith(b"<"):
        xml = _read_xml(data, p.name)
        if xml is None:
            return _unstructured(p, "vtu")
        points, polys, strips = xml
    else:
        raise InputError(f"{p.name}: not a VTK file (expected a legacy '# vtk DataFile Version ...' header "
                         "or an XML <VTKFile> document)")
    return _triangles(points, polys, strips, p.name)


def _unstructured(path, reader):
    """An unstructured grid's surface cells, read by meshio."""
    return read_meshio(path, reader, "VTK unstructured grid")


def _triangles(points, polys, strips, name):
    if points is None or len(points) == 0:
        raise InputError(f"{name}: no POINTS in the file")
    tris = [fan_triangulate(*c, name) for c in polys] + [_strip(*c, name) for c in strips]
    tris = [t for t in tris if len(t)]
    if not tris:
        raise InputError(f"{name}: no polygons or triangle strips (only points or lines?): not a surface mesh")
    return np.asarray(points, np.float64), np.concatenate(tris)


def _cells(offsets, connectivity, what, name):
    """Check an (offsets with a leading 0, connectivity) cell array; return (start, count, connectivity)."""
    off = np.asarray(offsets, np.int64)
    conn = np.asarray(connectivity, np.int64)
    if len(off) == 0 or off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != len(conn):
        raise InputError(f"{name}: corrupt {what} cell array (offsets do not match {len(conn)} point ids)")
    return off[:-1], np.diff(off), conn


def fan_triangulate(offsets, connectivity, name):
    """(T, 3) triangles ``(p0, pk, pk+1)`` of polygons given as offsets (with a leading 0) into point ids."""
    start, count, conn = _cells(offsets, connectivity, "polygon", name)
    if np.any(count < 3):
        raise InputError(f"{name}: {int((count < 3).sum())} polygons have fewer than 3 points")
    ntri = count - 2
    first = np.repeat(start, ntri)
    k = np.arange(ntri.sum()) - np.repeat(np.cumsum(ntri) - ntri, ntri) + 1  # 1 .. count-2 within each polygon
    return np.stack([conn[first], conn[first + k], conn[first + k + 1]], 1)


def _strip(offsets, connectivity, name):
    start, count, conn = _cells(offsets, connectivity, "triangle strip", name)
    if np.any(count < 3):
        raise InputError(f"{name}: {int((count < 3).sum())} triangle strips have fewer than 3 points")
    ntri = count - 2
    k = np.arange(ntri.sum()) - np.repeat(np.cumsum(ntri) - ntri, ntri)  # 0 .. count-3 within each strip
    i = np.repeat(start, ntri) + k
    odd = k % 2 == 1  # VTK: triangle k is (k, k+1, k+2), or (k+1, k, k+2) when k is odd
    t = np.stack([conn[np.where(odd, i + 1, i)], conn[np.where(odd, i, i + 1)], conn[i + 2]], 1)
    keep = (t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 2] != t[:, 0])  # strip joins
    return t[keep]


# meshio cell types: surface cells kept (fan-triangulated), lower-dimensional ones skipped, any other refused
_MESHIO_SURFACE = ("triangle", "quad", "polygon")
_MESHIO_SKIPPED = ("empty", "vertex", "line")


def read_meshio(path, reader: str, label: str):
    """Vertices and triangles of the surface cells of a file read by meshio's ``meshio.<reader>.read``.

    Triangles, quads and polygons are fan-triangulated in the file's order; vertices and lines are skipped; any other
    cell (volume or second-order cells) raises :class:`~engine.errors.InputError`, and so does any exception meshio
    raises on a damaged file (whatever its type), naming the file and the format ``label``.

    Returns
    -------
    vertices : (V, 3) float64, the file's coordinates (mm for the engine)
    faces : (F, 3) int64 triangles, not validated
    """
    p = Path(path)
    read = importlib.import_module(f"meshio.{reader}").read
    try:
        m = read(str(p))
        points = np.asarray(m.points, np.float64)
        blocks = [(c.type, np.asarray(c.data)) for c in m.cells]
    except Exception as e:  # noqa: BLE001 - meshio raises ReadError, but also KeyError, IndexError, zlib.error ...
        raise InputError(f"{p.name}: not a readable {label} file ({type(e).__name__}: {str(e)[:200] or 'no detail'})"
                         ) from None
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{p.name}: points must be (n, 3) coordinates, got an array of shape {points.shape}")
    tris = []
    for kind, cells in blocks:
        if kind in _MESHIO_SKIPPED:
            continue
        if kind not in _MESHIO_SURFACE or cells.ndim != 2 or not np.issubdtype(cells.dtype, np.integer):
            raise InputError(f"{p.name}: {len(cells)} {kind} cells: only surface cells ({', '.join(_MESHIO_SURFACE)})"
                             " are read (a volume mesh? extract its surface first)")
        tris.append(fan_triangulate(np.arange(len(cells) + 1) * cells.shape[1], cells.ravel(), p.name))
    if not tris:
        raise InputError(f"{p.name}: no triangles, quads or polygons in the file: not a surface mesh")
    return points, np.concatenate(tris).astype(np.int64)


class _LegacyReader:
    """A cursor over a legacy VTK file: keyword lines are text, data are text tokens or big-endian binary."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name, self.pos, self.binary = data, name, 0, False

    def fail(self, what):
        raise InputError(f"{self.name}: {what}")

    def raw_line(self):
        if self.pos >= len(self.data):
            return None
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end
        line = self.data[self.pos:end].decode("latin-1").rstrip("\r")
        self.pos = end + 1
        return line

    def line(self):
        """The next non-blank line, stripped (None at the end of the file)."""
        while True:
            line = self.raw_line()
            if line is None or line.strip():
                return None if line is None else line.strip()

    def peek(self):
        pos = self.pos
        line = self.line()
        self.pos = pos
        return line

    def array(self, n: int, vtype: str, what: str) -> np.ndarray:
        code = LEGACY_TYPES.get(vtype.lower())
        if code is None:
            self.fail(f"unsupported data type {vtype!r} for {what}")
        if self.binary:
            nbytes = (n + 7) // 8 if code == "bit" else n * int(code[1])
            if self.pos + nbytes > len(self.data):
                self.fail(f"file ends inside the binary data of {what}")
            raw = self.data[self.pos:self.pos + nbytes]
            self.pos += nbytes
            if code == "bit":
                return np.unpackbits(np.frombuffer(raw, np.uint8))[:n]
            return np.frombuffer(raw, ">" + code).astype(code)
        return self.tokens(n, "u1" if code == "bit" else code, what)

    def tokens(self, n: int, code: str, what: str) -> np.ndarray:
        chunks, got = [], 0
        while got < n:
            line = self.raw_line()
            if line is None:
                self.fail(f"file ends after {got} of {n} values of {what}")
            words = line.split()
            if got + len(words) > n:
                self.fail(f"{what}: more values on a line than the {n} announced")
            chunks.append(line)
            got += len(words)
        try:
            return np.array(" ".join(chunks).split(), dtype=np.float64 if code[0] == "f" else np.int64)
        except (ValueError, OverflowError) as e:
            self.fail(f"bad number in {what} ({e})")

    def dataset(self) -> str:
        """Read the header up to the DATASET line; return the dataset type (upper case)."""
        header = self.raw_line()
        m = re.match(r"#\s*vtk\s+datafile\s+version\s+(\d+)\.(\d+)", header, re.I)
        if not m:
            self.fail(f"not a legacy VTK header: {header[:60]!r}")
        self.raw_line()  # title
        fmt = (self.line() or "").upper()
        if fmt not in ("ASCII", "BINARY"):
            self.fail(f"expected ASCII or BINARY on the third line, got {fmt[:40]!r}")
        self.binary = fmt == "BINARY"
        words = (self.line() or "").split()
        if len(words) != 2 or words[0].upper() != "DATASET":
            self.fail(f"expected 'DATASET POLYDATA' or 'DATASET UNSTRUCTURED_GRID', got {' '.join(words)[:60]!r}")
        return words[1].upper()

    def read(self):
        """The POLYDATA after :meth:`dataset`: points, polygon and strip cell arrays."""
        points, cells = None, {"POLYGONS": [], "TRIANGLE_STRIPS": []}
        while True:
            line = self.line()
            if line is None:
                break
            words = line.split()
            key = words[0].upper()
            if key in ("POINT_DATA", "CELL_DATA"):
                break  # attributes: not needed for the surface
            if key == "POINTS":
                n, vtype = self.ints(words, 1, "POINTS n type")[0], words[2] if len(words) > 2 else ""
                points = self.array(3 * n, vtype, "POINTS").astype(np.float64).reshape(n, 3)
            elif key in ("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS"):
                n, size = self.ints(words, 2, f"{key} n size")
                c = self.cell_array(key, n, size)
                if key in cells:
                    cells[key].append(c)
            elif key == "FIELD":
                self.skip_field(self.ints(words[1:], 1, "FIELD name n")[0])
            elif key == "METADATA":
                self.skip_metadata()
            else:
                self.fail(f"unexpected keyword {words[0]!r} in POLYDATA")
        return points, cells["POLYGONS"], cells["TRIANGLE_STRIPS"]

    def ints(self, words, k, form):
        """The k integers after the keyword in ``words``."""
        try:
            if len(words) > k and all(int(w) >= 0 for w in words[1:1 + k]):
                return [int(w) for w in words[1:1 + k]]
        except ValueError:
            pass
        self.fail(f"expected '{form}' (counts >= 0), got {' '.join(words)[:60]!r}")

    def cell_array(self, key, n, size):
        nxt = (self.peek() or "").split()
        if nxt and nxt[0].upper() == "OFFSETS":  # file version 5.x: n offsets (cells + 1), size point ids
            self.line()
            off = self.array(n, nxt[1] if len(nxt) > 1 else "", f"{key} OFFSETS")
            words = (self.line() or "").split()
            if not words or words[0].upper() != "CONNECTIVITY":
                self.fail(f"{key}: expected CONNECTIVITY after OFFSETS")
            return off, self.array(size, words[1] if len(words) > 1 else "", f"{key} CONNECTIVITY")
        flat = self.array(size, "int", key)  # n cells as [count, ids...], size values in all
        return _counted_to_offsets(flat, n, key, self.name)

    def skip_field(self, n_arrays):
        for _ in range(n_arrays):
            words = (self.line() or "").split()
            if words[:1] == ["NULL_ARRAY"]:
                continue
            if len(words) < 4:
                self.fail(f"bad FIELD array line {' '.join(words)[:60]!r}")
            comps, tuples = self.ints(words, 2, "name components tuples type")
            if words[3].lower() in ("string", "utf8_string"):
                self.fail("string arrays in FIELD data are not supported")
            self.array(comps * tuples, words[3], f"FIELD array {words[0]}")
            if (self.peek() or "").upper() == "METADATA":
                self.line()
                self.skip_metadata()

    def skip_metadata(self):
        while True:  # INFORMATION / COMPONENT_NAMES blocks, ended by a blank line
            line = self.raw_line()
            if line is None or not line.strip():
                return


def _counted_to_offsets(flat, n, key, name):
    """Classic legacy cells ``[count, id, id, ..., count, id, ...]`` -> (offsets with a leading 0, point ids)."""
    flat = np.asarray(flat, np.int64)
    k = int(flat[0]) if len(flat) else 0
    if n and k >= 0 and len(flat) == n * (k + 1) and np.all(flat[::k + 1] == k):  # all cells the same size
        return np.arange(n + 1) * k, flat.reshape(n, k + 1)[:, 1:].ravel()
    if n > len(flat):
        raise InputError(f"{name}: {key}: {n} cells announced in {len(flat)} values")
    heads, pos = np.empty(n, np.int64), 0
    for i in range(n):
        if pos >= len(flat):
            raise InputError(f"{name}: {key}: {n} cells announced, the data end after {i}")
        if flat[pos] < 0:
            raise InputError(f"{name}: {key}: cell {i} has a negative size {int(flat[pos])}")
        heads[i] = pos
        pos += 1 + int(flat[pos])
    if pos != len(flat):
        raise InputError(f"{name}: {key}: cell sizes do not add up to the {len(flat)} values announced")
    counts = flat[heads]
    return np.concatenate([[0], np.cumsum(counts)]), np.delete(flat, heads)


class _XmlContext:
    def __init__(self, root, name, appended):
        self.name = name
        order = root.get("byte_order", "LittleEndian")
        if order not in ("LittleEndian", "BigEndian"):
            raise InputError(f"{name}: unknown byte_order {order!r}")
        self.order = "<" if order == "LittleEndian" else ">"
        htype = root.get("header_type", "UInt32")
        if htype not in ("UInt32", "UInt64"):
            raise InputError(f"{name}: unsupported header_type {htype!r}")
        self.header = np.dtype(self.order + XML_TYPES[htype])
        comp = root.get("compressor")
        if comp and comp not in COMPRESSORS:
            raise InputError(f"{name}: unsupported compressor {comp!r} (zlib and LZMA are read)")
        self.decompress = COMPRESSORS[comp] if comp else None
        self.appended = appended  # (encoding, bytes after the '_') or None

    def fail(self, what):
        raise InputError(f"{self.name}: {what}")

    def count(self, elem, key: str) -> int:
        """A non-negative integer attribute (0 when absent)."""
        text = elem.get(key, "0")
        if not re.fullmatch("[0-9]+", text.strip()):
            self.fail(f"<{elem.tag}> attribute {key}={text[:20]!r} is not a count")
        return int(text)

    def _header_size(self, first):
        return self.header.itemsize * (1 if self.decompress is None else 3 + int(first))

    def _body_size(self, header):
        return int(header[0]) if self.decompress is None else int(header[3:].sum())

    def _unpack(self, header, body):
        if len(body) != self._body_size(header):
            self.fail("binary data array is truncated")
        if self.decompress is None:
            return body
        nblocks = int(header[0])
        if len(header) != 3 + nblocks:
            self.fail("corrupt compressed data header")
        ends = np.cumsum(header[3:]).astype(np.int64)
        try:
            out = b"".join(self.decompress(body[a:b]) for a, b in zip(np.r_[0, ends[:-1]], ends))
        except (zlib.error, lzma.LZMAError) as e:
            self.fail(f"cannot decompress a data array ({e})")
        size = 0 if nblocks == 0 else (nblocks - 1) * int(header[1]) + int(header[2] or header[1])
        if len(out) != size:
            self.fail(f"decompressed data array has {len(out)} bytes, the header says {size}")
        return out

    def from_raw(self, buf: bytes, offset: int) -> bytes:
        hs = self.header.itemsize
        if offset < 0 or offset + hs > len(buf):
            self.fail(f"appended data offset {offset} lies outside the appended data")
        hsize = self._header_size(np.frombuffer(buf, self.header, 1, offset)[0])
        if offset + hsize > len(buf):
            self.fail("appended data array header is truncated")
        header = np.frombuffer(buf[offset:offset + hsize], self.header)
        return self._unpack(header, buf[offset + hsize:offset + hsize + self._body_size(header)])

    def from_base64(self, text: str) -> bytes:
        """Decode base64 data: the header and the data encoded separately (as VTK writes) or together."""
        def b64(s):
            try:
                return base64.b64decode(s, validate=True)
            except (binascii.Error, ValueError) as e:
                self.fail(f"bad base64 data ({e})")

        def head(nbytes):
            raw = b64(text[:chars(nbytes)])[:nbytes]
            if len(raw) < nbytes:
                self.fail("base64 data array header is truncated")
            return np.frombuffer(raw, self.header)

        chars = lambda nbytes: -(-nbytes // 3) * 4  # noqa: E731
        hsize = self._header_size(head(self.header.itemsize)[0])
        hc = chars(hsize)
        header = head(hsize)
        nbody = self._body_size(header)
        if hsize % 3 and text[hc - 1:hc] == "=":  # header padded on its own: data encoded separately
            body = b64(text[hc:hc + chars(nbody)])
        else:
            body = b64(text[:chars(hsize + nbody)])[hsize:]
        return self._unpack(header, body)

    def array(self, elem, what) -> np.ndarray:
        vtype = elem.get("type")
        if vtype not in XML_TYPES:
            self.fail(f"unsupported data type {vtype!r} for {what}")
        fmt = elem.get("format", "ascii")
        text = elem.text or ""
        if fmt == "ascii":
            try:
                return np.array(text.split(), dtype=np.float64 if vtype.startswith("Float") else np.int64)
            except ValueError as e:
                self.fail(f"bad number in {what} ({e})")
        if fmt == "binary":
            raw = self.from_base64("".join(text.split()))
        elif fmt == "appended":
            if self.appended is None:
                self.fail(f"{what} refers to appended data, but the file has no <AppendedData>")
            encoding, buf = self.appended
            offset = self.count(elem, "offset")
            raw = self.from_raw(buf, offset) if encoding == "raw" else self.from_base64(buf[offset:])
        else:
            self.fail(f"unknown DataArray format {fmt!r} for {what}")
        dtype = np.dtype(self.order + XML_TYPES[vtype])
        if len(raw) % dtype.itemsize:
            self.fail(f"{what}: {len(raw)} bytes are not a whole number of {vtype}")
        return np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))


def _read_xml(data: bytes, name: str):
    """Points, polygon and strip cell arrays of an XML PolyData file; None for an UnstructuredGrid."""
    appended = None
    m = re.search(rb"<AppendedData\b([^>]*)>", data)
    if m:  # raw appended bytes may hold anything: cut them off before parsing the XML
        enc = re.search(rb"encoding\s*=\s*[\"'](\w+)[\"']", m.group(1))
        encoding = enc.group(1).decode() if enc else "raw"
        underscore = data.find(b"_", m.end())
        if underscore < 0:
            raise InputError(f"{name}: <AppendedData> without the '_' that starts its data")
        body = data[underscore + 1:]
        if encoding == "base64":
            try:
                body = "".join(body.split(b"<", 1)[0].decode("ascii").split())
            except UnicodeDecodeError as e:
                raise InputError(f"{name}: base64 appended data holds a non-ASCII byte at {e.start}") from None
        elif encoding != "raw":
            raise InputError(f"{name}: unknown AppendedData encoding {encoding!r}")
        appended = (encoding, body)
        data = data[:m.start()] + b"</VTKFile>"
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise InputError(f"{name}: not a readable VTK XML file ({e})") from None
    if root.tag != "VTKFile":
        raise InputError(f"{name}: not a VTK XML file (root element <{root.tag}>, expected <VTKFile>)")
    dtype = root.get("type")
    if dtype == "UnstructuredGrid":
        return None  # read by meshio
    if dtype != "PolyData":
        raise InputError(f"{name}: unsupported VTK dataset type {dtype}: only PolyData and UnstructuredGrid (surface "
                         "cells) are read; extract the surface first (e.g. ParaView's Extract Surface)")
    ctx = _XmlContext(root, name, appended)
    pieces = root.findall("./PolyData/Piece")
    if not pieces:
        ctx.fail("no <PolyData><Piece> in the file")
    points, polys, strips, base = [], [], [], 0
    for i, piece in enumerate(pieces):
        n = ctx.count(piece, "NumberOfPoints")
        arr = piece.find("./Points/DataArray")
        if arr is None:
            if n:
                ctx.fail(f"piece {i}: no <Points> data")
        else:
            pts = ctx.array(arr, "Points").astype(np.float64)
            if arr.get("NumberOfComponents", "1") != "3" or pts.size != 3 * n:
                ctx.fail(f"piece {i}: Points must be {n} x 3 values, got {pts.size}")
            points.append(pts.reshape(n, 3))
        for tag, out, count in (("Polys", polys, "NumberOfPolys"), ("Strips", strips, "NumberOfStrips")):
            if ctx.count(piece, count) == 0:
                continue
            arrays = {a.get("Name"): a for a in piece.findall(f"./{tag}/DataArray")}
            if "connectivity" not in arrays or "offsets" not in arrays:
                ctx.fail(f"piece {i}: <{tag}> needs 'connectivity' and 'offsets' arrays")
            ends = ctx.array(arrays["offsets"], f"{tag} offsets")
            out.append((np.r_[0, ends], ctx.array(arrays["connectivity"], f"{tag} connectivity") + base))
        base += n
    return (np.concatenate(points) if points else None), polys, strips


# --------------------------------------------------------------------------------------------------- writing
def _polygons(vertices, faces):
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] < 3:
        raise ValueError(f"need (V, 3) vertices and (F, k >= 3) polygons, got {v.shape} and {f.shape}")
    return v, f


def _ascii(a) -> str:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return "\n".join(" ".join(repr(float(x)) for x in row) for row in a.reshape(len(a), -1))
    return "\n".join(" ".join(str(int(x)) for x in row) for row in a.reshape(len(a), -1))


def write_vtk_legacy(path, vertices, faces, *, binary: bool = False, version: str = "4.2",
                     title: str = "engine mesh") -> Path:
    """Write a legacy VTK POLYDATA file: polygons (F, k), ASCII or big-endian BINARY, cells in the classic
    layout (``version="4.2"``) or as OFFSETS / CONNECTIVITY (``version="5.1"``)."""
    v, f = _polygons(vertices, faces)
    n, k = f.shape
    parts = [f"# vtk DataFile Version {version}\n{title}\n{'BINARY' if binary else 'ASCII'}\nDATASET POLYDATA\n"
             .encode(), f"POINTS {len(v)} double\n".encode(), _legacy_data(v, ">f8", binary)]
    if version.startswith("5"):
        parts += [f"POLYGONS {n + 1} {n * k}\nOFFSETS vtktypeint64\n".encode(),
                  _legacy_data(np.arange(n + 1)[:, None] * k, ">i8", binary),
                  b"CONNECTIVITY vtktypeint64\n", _legacy_data(f, ">i8", binary)]
    else:
        parts += [f"POLYGONS {n} {n * (k + 1)}\n".encode(),
                  _legacy_data(np.concatenate([np.full((n, 1), k), f], 1), ">i4", binary)]
    p = Path(path)
    p.write_bytes(b"".join(parts))
    return p


def _legacy_data(a, code, binary):
    return (np.ascontiguousarray(a, code).tobytes() if binary else _ascii(a).encode()) + b"\n"


def write_vtp(path, vertices, faces, *, format: str = "ascii", compress: bool = False, header_type: str = "UInt32",
              byte_order: str = "LittleEndian") -> Path:
    """Write a VTK XML PolyData file of polygons (F, k).

    ``format``: ``"ascii"``, ``"binary"`` (inline base64), ``"appended"`` (raw bytes) or ``"appended-base64"``;
    ``compress``: zlib, in blocks of 32 KiB as VTK does (binary formats only).
    """
    v, f = _polygons(vertices, faces)
    if format not in ("ascii", "binary", "appended", "appended-base64"):
        raise ValueError(f"unknown VTP format {format!r}")
    if compress and format == "ascii":
        raise ValueError("compression needs a binary format")
    order = "<" if byte_order == "LittleEndian" else ">"
    hdt = np.dtype(order + XML_TYPES[header_type])
    n, k = f.shape
    arrays = [("Points", "Float64", v, ' NumberOfComponents="3"'), ("Polys", "Int64", f, ' Name="connectivity"'),
              ("Polys", "Int64", np.arange(1, n + 1) * k, ' Name="offsets"')]
    appended, xml = [], {"Points": [], "Polys": []}
    offset = 0
    for parent, vtype, a, attrs in arrays:
        if format == "ascii":
            xml[parent].append(f'<DataArray type="{vtype}"{attrs} format="ascii">\n{_ascii(a)}\n</DataArray>')
            continue
        raw = np.ascontiguousarray(a, order + XML_TYPES[vtype]).tobytes()
        if compress:
            blocks = [zlib.compress(raw[i:i + _BLOCK]) for i in range(0, len(raw), _BLOCK)]
            head = [len(blocks), _BLOCK, len(raw) % _BLOCK] + [len(b) for b in blocks]
            header, body = np.array(head, hdt).tobytes(), b"".join(blocks)
        else:
            header, body = np.array([len(raw)], hdt).tobytes(), raw
        if format == "appended":
            chunk = header + body
        else:  # header and data base64-encoded separately, as VTK writes them
            chunk = base64.b64encode(header) + base64.b64encode(body)
        if format == "binary":
            xml[parent].append(f'<DataArray type="{vtype}"{attrs} format="binary">\n{chunk.decode()}\n</DataArray>')
        else:
            xml[parent].append(f'<DataArray type="{vtype}"{attrs} format="appended" offset="{offset}"/>')
            appended.append(chunk)
            offset += len(chunk)
    comp = ' compressor="vtkZLibDataCompressor"' if compress else ""
    text = (f'<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="{byte_order}" '
            f'header_type="{header_type}"{comp}>\n<PolyData>\n<Piece NumberOfPoints="{len(v)}" NumberOfVerts="0" '
            f'NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{n}">\n'
            f'<Points>\n{chr(10).join(xml["Points"])}\n</Points>\n<Polys>\n{chr(10).join(xml["Polys"])}\n</Polys>\n'
            '</Piece>\n</PolyData>\n')
    out = text.encode()
    if appended:
        enc = "raw" if format == "appended" else "base64"
        out += f'<AppendedData encoding="{enc}">\n_'.encode() + b"".join(appended) + b"\n</AppendedData>\n"
    p = Path(path)
    p.write_bytes(out + b"</VTKFile>\n")
    return p
