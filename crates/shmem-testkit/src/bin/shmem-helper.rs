//! `shmem-helper ROLE ARGS...`: the other process in shmem's multi-process tests
//! (see `shmem_testkit::roles`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    shmem_testkit::roles::run(&args)
}
