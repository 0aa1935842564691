//! `Serde<T>` (feature `serde`) across processes, and with garbage bytes in the segment.

use std::time::Duration;

use proptest::prelude::*;
use shmem::{Error, Serde, Value};
use shmem_testkit::{unique_name, Proc, Reading, TestDir};

const T: Duration = Duration::from_secs(30);

fn open(dir: &TestDir, name: &str, cap: usize) -> Serde<Reading> {
    Serde::with(Value::builder(name).dir(dir.path()).capacity(cap), |b| {
        b.open()
    })
    .unwrap()
}

#[test]
fn a_serde_value_crosses_processes_both_ways() {
    let dir = TestDir::new("serde");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("serde");
    let sut = open(&dir, &name, 1024);
    assert_eq!(sut.get().unwrap(), None, "never set");
    let (status, out) = Proc::spawn(["serde-get", d, &name]).wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out, ["unset"]);

    // Another process stores 300 readings; we read its last one.
    let (status, out) = Proc::spawn(["serde-set", d, &name, "300"]).wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out, ["stored 300"]);
    assert_eq!(sut.get().unwrap(), Some((Reading::nth(300), 300)));

    // We store one; another process decodes it.
    let v = sut.set(&Reading::nth(7)).unwrap();
    let (status, out) = Proc::spawn(["serde-get", d, &name]).wait_output(T);
    assert!(status.success(), "{out:?}");
    assert_eq!(out, [format!("value {v} {:?}", Reading::nth(7))]);

    // An encoding larger than the capacity is refused and changes nothing.
    let mut big = Reading::nth(1);
    big.samples = (0..10_000).collect();
    assert!(matches!(sut.set(&big), Err(Error::TooLarge { .. })));
    assert_eq!(sut.get().unwrap(), Some((Reading::nth(7), v)));
    drop(sut);
    assert!(dir.files().is_empty());
}

#[test]
fn garbage_in_the_segment_is_a_codec_error_that_names_the_segment() {
    let dir = TestDir::new("serde");
    let d = dir.path().to_str().unwrap();
    let name = unique_name("serde-garbage");
    let sut = open(&dir, &name, 256);
    let raw = sut.value();
    let good = {
        raw.set(&[]).unwrap();
        sut.set(&Reading::nth(5)).unwrap();
        raw.get_vec().unwrap().0
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty but set", Vec::new()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("left over", [good.as_slice(), &[0]].concat()),
        // A string length prefix of 2^32 - 1 (varint), with 3 bytes after it.
        (
            "huge length",
            vec![0xff, 0xff, 0xff, 0xff, 0x0f, b'a', b'b', b'c'],
        ),
        ("bad enum tag", {
            let mut b = good.clone();
            let last = b.len() - 1;
            b[last] = 9; // ReadingState has variants 0 and 1
            b
        }),
        ("invalid UTF-8", {
            let mut b = good.clone();
            b[1] = 0xff; // inside "sensor-5"
            b
        }),
    ];
    for (what, bytes) in cases {
        let version = raw.set(&bytes).unwrap();
        let e = sut.get().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Codec { .. }), "{what}: {e:?}");
        assert!(msg.contains(&name), "{what}: {msg}");
        assert!(msg.contains("Reading"), "{what}: names the type: {msg}");
        assert!(
            msg.contains(&format!("at version {version}")),
            "{what}: {msg}"
        );
        // Another process reading the same bytes gets the same kind of error.
        let (status, out) = Proc::spawn(["serde-get", d, &name]).wait_output(T);
        assert!(status.success(), "{what}: {out:?}");
        assert!(
            out[0].starts_with("codec-error ") && out[0].contains(&name),
            "{out:?}"
        );
    }
    drop(sut);
    assert!(dir.files().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bytes at all decode to a `Reading` or fail with `Codec`: never a panic, never
    /// another error.
    #[test]
    fn any_stored_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let dir = TestDir::new("serde");
        let name = unique_name("serde-prop");
        let sut = open(&dir, &name, 256);
        sut.value().set(&bytes).unwrap();
        match sut.get() {
            Ok(Some((r, 1))) => prop_assert_eq!(postcard_len(&r), bytes.len()),
            Err(Error::Codec { .. }) => {}
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// The length of `r`'s encoding, through the crate itself: store it and read the length.
fn postcard_len(r: &Reading) -> usize {
    let dir = TestDir::new("serde");
    let s = open(&dir, &unique_name("serde-len"), 4096);
    s.set(r).unwrap();
    s.value().get_vec().unwrap().0.len()
}
