//! The seed's parent and child in Python, with ctypes against `libshmem_compat.so`
//! (examples/python/ctypes).

mod common;

use common::{compat_so, have, run_ok, Fixture, CHILD_LINE};

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
