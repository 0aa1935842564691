//! Typed values: one plain-old-data `T` in a [`Value`], moved as its bytes.
//!
//! `T: bytemuck::Pod` says every byte pattern of `size_of::<T>()` bytes is a valid `T` and `T`
//! has no padding, which is exactly what a value that another process writes needs: whatever
//! bytes arrive are a `T`, nothing is undefined behaviour, and what we store reveals no
//! uninitialised padding. (zerocopy's `FromBytes + IntoBytes` say the same; bytemuck's two
//! derives are the smaller surface for this one use, see ARCHITECTURE.md.)

use std::marker::PhantomData;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::value::{Value, ValueBuilder};

/// A [`Value`] that holds one `T`. A value never set reads as `T::zeroed()` at version 0.
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Pose { x: f64, y: f64, heading: f32, flags: u32 }
///
/// let name = format!("doc-typed-{}", std::process::id());
/// let pose = shmem::Typed::<Pose>::open(&name)?;
/// assert_eq!(pose.get()?.0, bytemuck::Zeroable::zeroed());
/// let v = pose.set(&Pose { x: 1.0, y: 2.0, heading: 0.5, flags: 3 })?;
/// assert_eq!(pose.get()?, (Pose { x: 1.0, y: 2.0, heading: 0.5, flags: 3 }, v));
/// # Ok::<(), shmem::Error>(())
/// ```
#[derive(Debug)]
pub struct Typed<T> {
    value: Value,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: bytemuck::Pod> Typed<T> {
    /// Opens or creates the transient value `name` in `/dev/shm`, sized for one `T`.
    ///
    /// # Errors
    /// As [`Value::open`], and [`Error::InvalidSize`] if an existing value cannot hold a `T`.
    pub fn open(name: &str) -> Result<Typed<T>> {
        Typed::with(Value::builder(name), ValueBuilder::open)
    }

    /// Opens with the options of `builder` (its capacity is set to `size_of::<T>()`), through
    /// `how` ([`ValueBuilder::open`], [`ValueBuilder::create_new`] or
    /// [`ValueBuilder::open_existing`]).
    ///
    /// # Errors
    /// As `how`, and [`Error::InvalidSize`] if the value cannot hold a `T`.
    pub fn with(
        builder: ValueBuilder,
        how: impl FnOnce(&ValueBuilder) -> Result<Value>,
    ) -> Result<Typed<T>> {
        Typed::from_value(how(&builder.capacity(std::mem::size_of::<T>()))?)
    }

    /// Wraps an open value; it must hold at least `size_of::<T>()` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] if it cannot hold a `T`.
    pub fn from_value(value: Value) -> Result<Typed<T>> {
        let need = std::mem::size_of::<T>();
        if value.capacity() < need {
            return Err(Error::InvalidSize {
                name: value.name().to_owned(),
                reason: format!(
                    "it holds at most {} bytes, less than the {need} of a {}",
                    value.capacity(),
                    std::any::type_name::<T>()
                ),
            });
        }
        Ok(Typed {
            value,
            _t: PhantomData,
        })
    }

    /// Publishes `t`; returns its version.
    ///
    /// # Errors
    /// As [`Value::set`].
    pub fn set(&self, t: &T) -> Result<u64> {
        self.value.set(bytemuck::bytes_of(t))
    }

    /// The current `T` and its version (`T::zeroed()` at version 0 if it was never set).
    ///
    /// # Errors
    /// As [`Value::get`]; [`Error::Incompatible`] if another process stored a value that is
    /// not `size_of::<T>()` bytes long.
    pub fn get(&self) -> Result<(T, u64)> {
        let mut t = T::zeroed();
        let need = std::mem::size_of::<T>();
        match self.value.get(bytemuck::bytes_of_mut(&mut t)) {
            Ok((n, v)) if n == need => Ok((t, v)),
            Ok((0, 0)) => Ok((T::zeroed(), 0)),
            Ok((n, _)) => Err(self.not_a_t(n)),
            Err(Error::BufferTooSmall { needed, .. }) => Err(self.not_a_t(needed)),
            Err(e) => Err(e),
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

    fn not_a_t(&self, len: usize) -> Error {
        Error::Incompatible {
            name: self.value.name().to_owned(),
            reason: format!(
                "it holds a value of {len} bytes, not a {} of {}",
                std::any::type_name::<T>(),
                std::mem::size_of::<T>()
            ),
        }
    }
}
