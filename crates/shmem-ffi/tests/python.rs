//! The seed's parent and child in Python, with ctypes against `libshmem_compat.so`
//! (examples/python/ctypes).

mod common;

use common::{compat_so, have, lib_so, run_ok, Fixture, CHILD_LINE};

#[test]
fn the_python_parent_and_child_share_the_string() {
    if !have("python3") {
        println!("skipped: python3 is not installed");
        return;
    }
    let fx = Fixture::new("py");
    let dir = common::root().join("examples/python/ctypes");
    let out = run_ok(
        fx.command("python3")
            .env("SHMEM_LIB", compat_so())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(dir.join("parent.py"))
            .arg(dir.join("child.py")),
    );
    assert!(
        out.lines().any(|l| l == CHILD_LINE),
        "the child did not print its line:\n{out}"
    );
    assert_eq!(
        fx.files(),
        Vec::<String>::new(),
        "the last user freed the segment"
    );
}

#[test]
fn a_python_script_that_never_closes_leaves_nothing_at_exit() {
    if !have("python3") {
        println!("skipped: python3 is not installed");
        return;
    }
    let fx = Fixture::new("pyexit");
    let script = r#"
import ctypes, os, sys
lib = ctypes.CDLL(os.environ["SHMEM_LIB"])
lib.shmem_open.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                           ctypes.POINTER(ctypes.c_void_p)]
lib.shmem_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
v = ctypes.c_void_p()
assert lib.shmem_open(sys.argv[1].encode(), 64, 1, ctypes.byref(v)) == 0  # SHMEM_CREATE
assert lib.shmem_set(v, b"from python", 11) == 0
print(os.getpid(), flush=True)
# No shmem_close: the script just ends, as most scripts do.
"#;
    let out = run_ok(
        fx.command("python3")
            .env("SHMEM_LIB", lib_so())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args(["-c", script])
            .arg(&fx.name),
    );
    let pid = out.trim().to_owned();
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(pid.as_str())),
        "its memory is still there"
    );
    assert_eq!(fx.files(), Vec::<String>::new(), "left behind");
}
