//! How `Value`, `Map` and `Segment` attach their segment: the ways a Python call opens one
//! ([`Open`]) and the one function that applies them to any of their builders ([`attach`]).

use pyo3::prelude::*;

use crate::errors;

/// How a handle attaches: the class call (open or create), `create`, `open`, and `open` with
/// `readonly=True`.
#[derive(Clone, Copy)]
pub(crate) enum Open {
    OrCreate,
    Create,
    Existing,
    /// `Existing`, read-only.
    ReadOnly,
}

impl Open {
    /// `Existing`, or `ReadOnly` if `readonly` (`Segment` offers no read-only handle).
    pub(crate) fn existing(readonly: bool) -> Open {
        if readonly {
            Open::ReadOnly
        } else {
            Open::Existing
        }
    }
}

/// The lifetime a new segment gets.
pub(crate) fn lifetime(persistent: bool) -> shmem::Lifetime {
    if persistent {
        shmem::Lifetime::Persistent
    } else {
        shmem::Lifetime::Transient
    }
}

/// A core builder `attach` can open: a value's, a map's or a raw segment's.
pub(crate) trait Builder: Sync {
    type Handle: Send;
    /// The builder for a read-only handle, with the sharing mode that lets it open another
    /// user's segment.
    fn read_only(self) -> Self;
    fn open_or_create(&self) -> shmem::Result<Self::Handle>;
    fn create_new(&self) -> shmem::Result<Self::Handle>;
    fn open_existing(&self) -> shmem::Result<Self::Handle>;
}

/// The same forwarding impl for each builder (the core's builders have the same methods but
/// no trait of their own).
macro_rules! impl_builder {
    ($builder:ty => $handle:ty) => {
        impl Builder for $builder {
            type Handle = $handle;
            fn read_only(self) -> Self {
                self.access(shmem::Access::ReadOnly).mode(0o644)
            }
            fn open_or_create(&self) -> shmem::Result<$handle> {
                self.open()
            }
            fn create_new(&self) -> shmem::Result<$handle> {
                <$builder>::create_new(self)
            }
            fn open_existing(&self) -> shmem::Result<$handle> {
                <$builder>::open_existing(self)
            }
        }
    };
}

impl_builder!(shmem::ValueBuilder => shmem::Value);
impl_builder!(shmem::MapBuilder => shmem::Map);
impl_builder!(shmem::Builder => shmem::Segment);

/// Opens what `builder` describes, `how`, with the GIL released: attaching may wait for
/// another process that is initialising the segment, and creating reserves every page
/// (`fallocate`), which takes a while for a large one. Read-only: a sharing mode is how the
/// core crate accepts another user's segment (it creates nothing, so the mode sets no file's
/// mode).
pub(crate) fn attach<B: Builder>(py: Python<'_>, builder: B, how: Open) -> PyResult<B::Handle> {
    let builder = match how {
        Open::ReadOnly => builder.read_only(),
        _ => builder,
    };
    py.detach(|| match how {
        Open::OrCreate => builder.open_or_create(),
        Open::Create => builder.create_new(),
        Open::Existing | Open::ReadOnly => builder.open_existing(),
    })
    .map_err(errors::to_py)
}
