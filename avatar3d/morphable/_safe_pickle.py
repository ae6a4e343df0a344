"""A restricted unpickler for model files distributed as pickles (FLAME's ``generic_model.pkl``).

A pickle can run arbitrary code: every global it names is imported and may be called. This reader
resolves only an allow-list of globals -- numpy array/dtype/scalar reconstruction, Python's
``set``/``frozenset``, scipy sparse matrices and chumpy arrays -- and refuses everything else with a
one-line :class:`~avatar3d.errors.FormatError` before anything is called.

- scipy sparse matrices are *not* rebuilt through scipy's classes: their pickled state (``data``,
  ``indices``, ``indptr`` / ``row``, ``col``, ``_shape``) is collected by a stand-in and turned into a
  dense numpy array.
- chumpy objects (``chumpy.ch.Ch``, chumpy itself is not needed) are collected by a stand-in too;
  a plain ``Ch`` keeps its array in the attribute ``x``, which becomes a numpy array. Derived chumpy
  expressions have no stored value and are refused.
- Python-2 pickles are read with ``encoding="latin1"`` (numpy's byte buffers were ``str`` there).
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError


class _ChumpyStandIn:
    """Receives a pickled chumpy object's state; never executes chumpy code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseStandIn:
    """Receives a pickled scipy sparse matrix's state (csc/csr/coo)."""

    fmt = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _sparse_class(fmt: str) -> type:
    return type(f"_Sparse_{fmt}", (_SparseStandIn,), {"fmt": fmt})


_SPARSE = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}


def _encode_latin1(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Python 3's protocol-2 pickles store ``bytes`` as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise FormatError("pickle calls _codecs.encode with arguments other than a latin-1 string")
    return text.encode("latin1", errors)


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copy_reg._reconstructor`` limited to our stand-in classes (protocol 0/1 pickles)."""
    if not (isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn))):
        raise FormatError(f"pickle reconstructs a disallowed class {cls!r}")
    return cls.__new__(cls)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core_name = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"  # renamed in 2.0
    multiarray = importlib.import_module(f"{core_name}.multiarray")
    numeric = importlib.import_module(f"{core_name}.numeric")
    out: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    for name in ("float64", "float32", "int64", "int32", "uint32", "uint64", "bool_"):
        out[("numpy", name)] = getattr(np, name)
    return out


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed = _numpy_globals()
    for mod in ("__builtin__", "builtins"):
        allowed[(mod, "set")] = set
        allowed[(mod, "frozenset")] = frozenset
        allowed[(mod, "object")] = object
    allowed[("_codecs", "encode")] = _encode_latin1
    allowed[("copy_reg", "_reconstructor")] = _safe_reconstructor
    allowed[("copyreg", "_reconstructor")] = _safe_reconstructor
    for fmt, cls in _SPARSE.items():
        for mod in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(mod, f"{fmt}_matrix")] = cls
            allowed[(mod, f"{fmt}_array")] = cls
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (see the module docstring)."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        raise FormatError(
            f"{self.source}: pickle refers to disallowed global {module}.{name}; refusing to load"
        )


def _sparse_to_dense(obj: _SparseStandIn, where: str) -> np.ndarray:
    st = obj.state
    if not isinstance(st, dict):
        raise FormatError(f"{where}: sparse matrix without readable state")
    shape = st.get("_shape", st.get("shape"))
    try:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
            raise FormatError(
                f"{where}: a {shape} sparse matrix is too large to make dense; refusing to load"
            )
        out = np.zeros(shape, dtype=np.float64)
        data = np.asarray(st["data"], dtype=np.float64)
        if obj.fmt == "coo":
            rows, cols = np.asarray(st["row"], np.int64), np.asarray(st["col"], np.int64)
        else:
            indices, indptr = np.asarray(st["indices"], np.int64), np.asarray(st["indptr"], np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if obj.fmt == "csc" else (major, indices)
        np.add.at(out, (rows, cols), data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FormatError(f"{where}: malformed {obj.fmt} sparse matrix ({type(e).__name__}: {e})") from None
    return out


def _chumpy_to_array(obj: _ChumpyStandIn, where: str, convert) -> np.ndarray:
    st = obj.state
    if isinstance(st, dict) and "x" in st:
        x = convert(st["x"])
        if isinstance(x, np.ndarray) or np.isscalar(x):
            return np.asarray(x)
    raise FormatError(f"{where}: chumpy object holds no plain array (a derived chumpy expression?)")


MAX_NODES = 10_000_000  # objects a pickle's structure may describe (every shared reference counted)
MAX_DEPTH = 200
MAX_DENSE_ELEMENTS = 100_000_000  # a sparse matrix made dense (800 MB of float64)
MAX_FILE_BYTES = 2 << 30


def plain(obj: Any, where: str = "pickle") -> Any:
    """Replace stand-ins by numpy arrays, recursively through dicts, lists and tuples.

    A pickle can reference one container from many places (its memo): "billion laughs" files nest
    such references so that the structure they describe grows exponentially with the file's size.
    Each object is converted once, and the size of the structure as a reader would see it (every
    reference counted) and its depth are bounded: a larger one is refused before anything uses it.
    """
    memo: dict[int, tuple[Any, int]] = {}

    def walk(o: Any, at: str, depth: int) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise FormatError(f"{where}: nested deeper than {MAX_DEPTH} levels; refusing to load")
        if id(o) in memo:
            return memo[id(o)]
        size = 1
        if isinstance(o, _ChumpyStandIn):
            out = _chumpy_to_array(o, at, lambda x: walk(x, at, depth + 1)[0])
        elif isinstance(o, _SparseStandIn):
            out = _sparse_to_dense(o, at)
        elif isinstance(o, (dict, list, tuple)):
            items = o.items() if isinstance(o, dict) else enumerate(o)
            conv = {}
            for k, v in items:
                conv[k], n = walk(v, f"{at}[{k!r}]" if isinstance(o, dict) else at, depth + 1)
                size += n
                if size > MAX_NODES:
                    raise FormatError(f"{where}: describes more than {MAX_NODES} objects; refusing to load")
            out = conv if isinstance(o, dict) else type(o)(conv.values())
        else:
            out = o
        memo[id(o)] = (out, size)
        return out, size

    return walk(obj, where, 0)[0]


def load_pickle(path: str | Path) -> Any:
    """Read a pickle with :class:`RestrictedUnpickler`; stand-ins become numpy arrays.

    Raises:
        FormatError: the file is unreadable, corrupt, or names a global outside the allow-list.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise FormatError(f"{path}: larger than {MAX_FILE_BYTES} bytes; refusing to load")
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return plain(RestrictedUnpickler(io.BytesIO(data), str(path)).load(), str(path))
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or truncated pickles raise many kinds of error
        raise FormatError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
