//! Tiny runs of the harness: a few measurements with a handful of iterations, with peer
//! processes, checking the JSON's shape and that /dev/shm is left clean. No timing is asserted.

use std::process::Command;

/// Runs `shmem-bench --smoke --only GROUPS --json ...`; returns its JSON and checks that
/// nothing named for its pid is left in /dev/shm.
fn run(groups: &str, tag: &str) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("shmem-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let child = Command::new(env!("CARGO_BIN_EXE_shmem-bench"))
        .args(["--smoke", "--only", groups, "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&json);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("-{pid}")))
        .collect();
    assert!(leftovers.is_empty(), "left in /dev/shm: {leftovers:?}");
    serde_json::from_str(&text.unwrap()).unwrap()
}

fn has(v: &serde_json::Value, name: &str, imp: &str) -> bool {
    let ms = v["measurements"].as_array().unwrap();
    ms.iter().any(|m| m["name"] == name && m["impl"] == imp)
}

#[test]
fn smoke_run_writes_json_and_leaves_nothing_behind() {
    let v = run("limits,shmem", "smoke");
    assert!(has(&v, "copy", "memcpy"));
    assert!(has(&v, "get", "shmem") && has(&v, "set", "shmem"));
    assert!(has(&v, "wake ping-pong", "futex"));
    assert!(has(&v, "attach+detach", "shmem"));
    assert!(has(&v, "clock read", "Instant::now"));
    assert!(v["machine"]["topology"].as_str().unwrap().contains("CPU 0"));
    for m in v["measurements"].as_array().unwrap() {
        for f in ["name", "impl", "size", "unit", "p50", "p99", "mean"] {
            assert!(!m[f].is_null(), "{f} in {m}");
        }
    }
    assert!(v["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "shmem get 64 B vs memcpy copy 64 B" && r["pair"] != ""));
}

/// Only with `--features iceoryx2` (CI builds default features): its figures run beside
/// ours and meet them in the ratio table.
#[cfg(feature = "iceoryx2")]
#[test]
fn iceoryx2_figures_run_beside_ours() {
    let v = run("shmem,iceoryx2", "ice");
    if v["machine"]["cpus"].as_u64() < Some(2) {
        eprintln!("skipped: iceoryx2 figures need two CPUs");
        return;
    }
    for name in [
        "poll ping-pong",
        "poll ping-pong, zero-copy",
        "wake ping-pong",
        "get",
        "set",
    ] {
        assert!(has(&v, name, "iceoryx2"), "{name}");
    }
    let ratios = v["ratios"].as_array().unwrap();
    assert!(ratios
        .iter()
        .any(|r| r["name"] == "shmem set, sole writer 64 B vs iceoryx2 set 64 B"));
}
