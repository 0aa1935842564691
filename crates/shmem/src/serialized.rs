//! Serde values (feature `serde`): any `T: Serialize + DeserializeOwned` in a [`Value`],
//! encoded with postcard.
//!
//! Why postcard: a value lives in a fixed-capacity slot that every `set` copies whole, so the
//! format should be compact (varint integers, no field names, no framing), and it must be
//! fully specified, since another program (or another build of this one) reads what we store:
//! postcard's wire format is documented and stable since 1.0, serde-native, and brings one
//! small dependency (`cobs`). Self-describing formats (JSON, CBOR, MessagePack) store field
//! names in every value and cost several times the bytes and time; bincode's 2.x line changed
//! its format and API, and its 1.x line is no longer developed. The price of a
//! non-self-describing format: the reader must use the type the writer used. Changing a type
//! (a field added, reordered or retyped) makes bytes stored by the old type decode as an error,
//! or, worse, as a different valid value: version your type (an enum of versions, say) if
//! readers and writers may differ.
//!
//! The bytes are untrusted (any process with write access may store anything): decoding is
//! checked by postcard and serde (a length prefix larger than the bytes left is an error, and
//! serde's collections pre-allocate at most a bounded amount whatever the prefix says), and
//! bytes left over after the value are refused too. A failure is [`Error::Codec`] naming the
//! segment, the type, the length and version of the bytes, and postcard's reason.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::value::{Value, ValueBuilder};

/// A [`Value`] that holds one `T`, encoded with postcard (feature `serde`).
///
/// ```
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct Config { mode: String, retries: u32, peers: Vec<String> }
///
/// let name = format!("doc-serde-{}", std::process::id());
/// let config = shmem::Serde::<Config>::open(&name, 1024)?;
/// assert_eq!(config.get()?, None, "never set");
/// let c = Config { mode: "fast".into(), retries: 3, peers: vec!["a".into()] };
/// let v = config.set(&c)?;
/// assert_eq!(config.get()?, Some((c, v)));
/// # Ok::<(), shmem::Error>(())
/// ```
#[derive(Debug)]
pub struct Serde<T> {
    value: Value,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Serde<T> {
    /// Opens or creates the transient value `name` in `/dev/shm`, holding up to `capacity`
    /// encoded bytes.
    ///
    /// # Errors
    /// As [`Value::open`].
    pub fn open(name: &str, capacity: usize) -> Result<Serde<T>> {
        Ok(Serde::from_value(Value::open(name, capacity)?))
    }

    /// Opens with the options of `builder` through `how` ([`ValueBuilder::open`],
    /// [`ValueBuilder::create_new`] or [`ValueBuilder::open_existing`]).
    ///
    /// # Errors
    /// As `how`.
    pub fn with(
        builder: ValueBuilder,
        how: impl FnOnce(&ValueBuilder) -> Result<Value>,
    ) -> Result<Serde<T>> {
        Ok(Serde::from_value(how(&builder)?))
    }

    /// Wraps an open value.
    pub fn from_value(value: Value) -> Serde<T> {
        Serde {
            value,
            _t: PhantomData,
        }
    }

    /// Encodes `t` and publishes it; returns its version.
    ///
    /// # Errors
    /// [`Error::Codec`] if `t` cannot be encoded (a serializer error of its `Serialize`);
    /// [`Error::TooLarge`] if the encoding does not fit the capacity (nothing is stored);
    /// otherwise as [`Value::set`].
    pub fn set(&self, t: &T) -> Result<u64> {
        let bytes = postcard::to_stdvec(t).map_err(|e| Error::Codec {
            name: self.value.name().to_owned(),
            reason: format!(
                "a {} cannot be encoded (postcard): {e}",
                std::any::type_name::<T>()
            ),
        })?;
        self.value.set(&bytes)
    }

    /// The current `T` and its version, or `None` if nothing was ever stored (version 0).
    ///
    /// # Errors
    /// [`Error::Codec`] if the stored bytes are not exactly one encoded `T`; otherwise as
    /// [`Value::get`].
    pub fn get(&self) -> Result<Option<(T, u64)>> {
        let (bytes, version) = self.value.get_vec()?;
        if version == 0 && bytes.is_empty() {
            return Ok(None);
        }
        let bad = |why: String| Error::Codec {
            name: self.value.name().to_owned(),
            reason: format!(
                "the {} bytes stored at version {version} are not a {} (postcard): {why}",
                bytes.len(),
                std::any::type_name::<T>()
            ),
        };
        match postcard::take_from_bytes::<T>(&bytes) {
            Ok((t, [])) => Ok(Some((t, version))),
            Ok((_, rest)) => Err(bad(format!("{} bytes are left over", rest.len()))),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Sleeps until the version differs from `since`; as [`Value::wait_changed`].
    ///
    /// # Errors
    /// As [`Value::wait_changed`].
    pub fn wait_changed(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.value.wait_changed(since, timeout)
    }

    /// The untyped value underneath.
    pub fn value(&self) -> &Value {
        &self.value
    }
}
