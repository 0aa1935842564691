"""The type stubs describe the native module as it is: same names, same members."""

import ast
import inspect
from pathlib import Path

import shmem
from shmem import _shmem

STUB = Path(shmem.__file__).with_name("_shmem.pyi")


def _stub_members():
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
    return out


def test_stubs_match_the_native_module():
    stub = _stub_members()
    runtime = {n for n in dir(_shmem) if not n.startswith("__") or n == "__version__"}
    assert set(stub) == runtime
    for cls, members in stub.items():
        obj = getattr(_shmem, cls)
        if members is None or issubclass(obj, BaseException):
            continue
        public = {
            n
            for n, _ in inspect.getmembers(obj)
            if not n.startswith("__")
            or n
            in (
                "__enter__",
                "__exit__",
                "__iter__",
                "__next__",
                "__getitem__",
                "__setitem__",
                "__delitem__",
                "__contains__",
                "__len__",
            )
        }
        public.discard("__init__")
        assert members - {"__init__"} == public, cls


def test_the_package_is_typed_and_documented():
    assert Path(shmem.__file__).with_name("py.typed").exists()
    for obj in [shmem.Value, shmem.Map, shmem.Map.wait, shmem.Segment, shmem.unlink, shmem.Value.wait, shmem.Value.changed,
                shmem.Segment.buf, shmem.Error, shmem.CorruptError]:
        assert obj.__doc__ and len(obj.__doc__) > 20, obj
