"""shmem.compat: the seed's SetSharedMem/GetSharedMem, the seed's Python pair, and the C
library reading what Python stored."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import DEADLINE, files_of, python, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "python"
CHILD_LINE = "Child process read from shared memory: This is a test string"


def test_the_seed_parent_and_child(name):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "parent.py"), str(EXAMPLES / "child.py")],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=dict(os.environ, SHMEM_COMPAT_NAME=name, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert CHILD_LINE in proc.stdout.splitlines(), proc.stdout
    assert files_of(name) == []


def test_set_and_get_in_two_processes(name):
    env = {"SHMEM_COMPAT_NAME": name}
    out = python(
        """
        import subprocess, sys
        from shmem import compat
        assert compat.segment_name() == sys.argv[1]
        assert compat.GetSharedMem() == ""
        compat.SetSharedMem("naïve 🐍 text")
        print(subprocess.run([sys.executable, "-c",
            "from shmem.compat import GetSharedMem; print(GetSharedMem())"],
            capture_output=True, text=True, check=True).stdout, end="")
        compat.SetSharedMem("x" * 5000)
        assert compat.GetSharedMem() == "x" * 1023
        try:
            compat.SetSharedMem(b"bytes")
        except TypeError as e:
            print("TypeError:", e)
        """,
        name,
        env=env,
    ).stdout
    assert out == "naïve 🐍 text\nTypeError: SetSharedMem stores a str, not bytes\n"
    assert files_of(name) == []


def _libshmem() -> Path:
    """libshmem_compat (the seed's functions; it loads libshmem.so.0 from its directory):
    $SHMEM_LIB, or what `make` or the C library's tests built."""
    if os.environ.get("SHMEM_LIB"):
        return Path(os.environ["SHMEM_LIB"])
    for profile in ("debug", "release"):
        lib = ROOT / "target" / profile / "capi" / "libshmem_compat.so"
        if lib.exists():
            return lib
    skip_or_fail("libshmem_compat.so is not built (make, or cargo test -p shmem-ffi)")


def test_the_c_library_reads_what_python_stored_and_back(name):
    lib = _libshmem()
    out = python(
        """
        import subprocess, sys
        from shmem import compat
        compat.SetSharedMem("from Python: é 🐍")
        child = sys.argv[2] + "/ctypes/child.py"
        print(subprocess.run([sys.executable, child], capture_output=True, text=True,
                             check=True).stdout, end="")
        # and the other way: the C library stores, Python reads
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import libshmem; "
                "libshmem.load().SetSharedMem('from C: ü')")
        subprocess.run([sys.executable, "-c", code, sys.argv[2] + "/ctypes"], check=True)
        print(compat.GetSharedMem())
        """,
        name,
        str(EXAMPLES),
        env={"SHMEM_COMPAT_NAME": name, "SHMEM_LIB": str(lib)},
    ).stdout
    assert out == "Child process read from shared memory: from Python: é 🐍\nfrom C: ü\n"
    assert files_of(name) == []
