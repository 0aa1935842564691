//! Typed values and the async wait, across processes.

use std::sync::Arc;
use std::time::Duration;

use shmem::{Error, Typed, Value};
use shmem_testkit::{unique_name, Proc, TestDir};

const T: Duration = Duration::from_secs(20);

#[test]
fn a_typed_value_reads_what_another_process_stored_and_refuses_other_lengths() {
    let dir = TestDir::new("typed");
    let name = unique_name("u64");
    let d = dir.path().to_str().unwrap();
    let sut: Typed<u64> = Typed::with(Value::builder(&name).dir(d), |b| b.open()).unwrap();
    assert_eq!(sut.get().unwrap(), (0, 0), "never set: zeroed at version 0");
    // The helper stores "warm-up" (7 bytes), then 1000 values `i.to_le_bytes()`.
    let (status, out) = Proc::spawn(["sets", d, &name, "1000"]).wait_output(T);
    assert!(status.success(), "{out:?}");
    let (n, v) = sut.get().unwrap();
    assert_eq!((n, v), (999, 1001));
    sut.value().set(b"warm-up").unwrap();
    let e = sut.get().unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    assert!(e.to_string().contains("7 bytes"), "{e}");
    sut.set(&7).unwrap();
    assert_eq!(sut.get().unwrap().0, 7);

    // A value too small for the type is refused when wrapped.
    let small = Value::builder(&unique_name("small"))
        .dir(d)
        .capacity(64)
        .open()
        .unwrap();
    let e = Typed::<[u64; 9]>::from_value(small).unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn changed_is_woken_by_another_process_and_ends_its_wait_when_dropped() {
    let dir = TestDir::new("async");
    let name = unique_name("changed");
    let d = dir.path().to_str().unwrap().to_owned();
    let sut = Arc::new(Value::builder(&name).dir(&d).capacity(64).open().unwrap());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (d2, n2) = (d.clone(), name.clone());
    let runner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let v0 = sut.version();
            // Pending while the event loop stays free: a timer on the same runtime fires.
            let wait = tokio::spawn({
                let sut = Arc::clone(&sut);
                async move { sut.changed(v0, Some(T)).await }
            });
            tokio::time::sleep(Duration::from_millis(1)).await;
            let (status, out) = tokio::task::spawn_blocking(move || {
                Proc::spawn(["sets", &d2, &n2, "1"]).wait_output(T)
            })
            .await
            .unwrap();
            assert!(status.success(), "{out:?}");
            let v = wait.await.unwrap().unwrap();
            assert!(v > v0);
            // Timeout, then a dropped future: its blocking wait must end, or the runtime's
            // shutdown below would wait for it forever.
            assert!(matches!(
                sut.changed(sut.version(), Some(Duration::from_millis(5)))
                    .await,
                Err(Error::Timeout { .. })
            ));
            let pending = sut.changed(sut.version(), None);
            assert!(tokio::time::timeout(Duration::from_millis(5), pending)
                .await
                .is_err());
        });
        drop(rt);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(T)
        .expect("the runtime shut down: no blocking wait was left behind");
    runner.join().unwrap();
    assert!(dir.files().is_empty());
}
