//! How a reader retries a pass that a writer disturbed, on every platform: spin, then yield,
//! ask writers to hold off (`seqlock.rs`), and give up with `Corrupt` when the shared state
//! stays invalid longer than any live writer could keep it. Shared by `Value` and `Map`.
//!
//! A reader on a read-only handle never asks (the request is a write): under a writer that
//! publishes faster than it copies, it is bounded only by [`READ_DEADLINE`], after which it
//! reports the value as changing too fast to read without asking.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::seqlock::{self, Control};

/// How long a reader retries before it reports that it found no consistent state.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// How long one inconsistent state may stay unchanged before a reader calls it corrupt.
const STUCK_LIMIT: Duration = Duration::from_millis(20);

/// A reader's retry state: spins, then yields; gives up when the same inconsistent state
/// (`seen` = version and sequence) persists for [`STUCK_LIMIT`], which no live writer can
/// cause (it never writes what is published), or after [`READ_DEADLINE`] in all.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
    started: Option<Instant>,
    seen: Option<(u64, u64)>,
    stuck_since: Option<Instant>,
    /// The reader cannot ask writers to hold off (a read-only handle): said in the error.
    cannot_ask: bool,
}

impl Backoff {
    /// The backoff of a reader that cannot ask writers to hold off (a read-only handle).
    pub(crate) fn without_hold_off() -> Backoff {
        Backoff {
            cannot_ask: true,
            ..Backoff::default()
        }
    }

    /// After a failed pass that saw `seen`: waits a little, or reports [`Error::Corrupt`]
    /// about `what` ("value", "map").
    pub(crate) fn retry(&mut self, name: &str, what: &str, seen: (u64, u64)) -> Result<()> {
        self.attempt += 1;
        let attempt = self.attempt;
        if attempt < 64 {
            std::hint::spin_loop();
            return Ok(());
        }
        let now = Instant::now();
        let t0 = *self.started.get_or_insert(now);
        if self.seen != Some(seen) {
            self.seen = Some(seen);
            self.stuck_since = Some(now);
        }
        let stuck = self
            .stuck_since
            .is_some_and(|t| now.duration_since(t) > STUCK_LIMIT);
        if stuck || now.duration_since(t0) > READ_DEADLINE {
            return Err(Error::Corrupt {
                name: name.to_owned(),
                reason: format!(
                    "no consistent {what} after {attempt} attempts: version {} and its \
                     sequence {} {}",
                    seen.0,
                    seen.1,
                    if stuck {
                        "do not form a valid state"
                    } else if self.cannot_ask {
                        "keep changing (a read-only handle cannot ask writers to hold off)"
                    } else {
                        "keep changing"
                    }
                ),
            });
        }
        std::thread::yield_now();
        Ok(())
    }
}

/// Asks writers to hold off after a failed pass: once, and again if a writer's pause ran out
/// and reset the request. Returns how many requests the reader must withdraw at the end.
pub(crate) fn ask_hold_off(ctrl: &Control, asked: &mut u32) {
    if *asked < 8 && (*asked == 0 || !seqlock::hold_off_standing(ctrl)) {
        seqlock::ask_hold_off(ctrl);
        *asked += 1;
    }
}
