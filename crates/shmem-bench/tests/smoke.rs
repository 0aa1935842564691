//! A tiny run of the harness: a few measurements with a handful of iterations, one of them
//! with a peer process, checking the JSON's shape and that /dev/shm is left clean. No timing
//! is asserted.

use std::process::Command;

#[test]
fn smoke_run_writes_json_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("shmem-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let child = Command::new(env!("CARGO_BIN_EXE_shmem-bench"))
        .args(["--smoke", "--only", "limits,shmem", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let ms = v["measurements"].as_array().unwrap();
    let has = |name: &str, imp: &str| ms.iter().any(|m| m["name"] == name && m["impl"] == imp);
    assert!(has("copy", "memcpy"));
    assert!(has("get", "shmem") && has("set", "shmem"));
    assert!(has("wake ping-pong", "futex"));
    assert!(has("attach+detach", "shmem"));
    assert!(has("clock read", "Instant::now"));
    assert!(v["machine"]["topology"].as_str().unwrap().contains("CPU 0"));
    for m in ms {
        for f in ["name", "impl", "size", "unit", "p50", "p99", "mean"] {
            assert!(!m[f].is_null(), "{f} in {m}");
        }
    }
    assert!(v["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "shmem get 64 B vs memcpy copy 64 B"));
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("-{pid}")))
        .collect();
    assert!(leftovers.is_empty(), "left in /dev/shm: {leftovers:?}");
}
