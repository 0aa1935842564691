//! The one measuring core: every figure of a run is an [`Entry`] (an operation plus how to time
//! it), and [`Plan::run`] times all entries of the selected scenarios in alternating blocks, so
//! that every pair compared in the ratio table saw the same machine load.
//!
//! Timing: `Instant::now()`, i.e. `clock_gettime(CLOCK_MONOTONIC)` through the vDSO (the
//! `clock read` entries report its cost on this machine; nothing is subtracted from any
//! figure). A *batch* entry times batches of N calls lasting about `batch_time` with one clock
//! read each (a sample is batch time / N); a *call* entry times each call alone (a sample then
//! includes one clock read, see `clock read, one call`).

use std::io;
use std::time::{Duration, Instant};

use crate::stats::{summarize, Kind, Measurement, Results};
use crate::sys::SharedPage;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// A handful of iterations: checks that everything runs (tests).
    Smoke,
    /// Under a minute in all.
    Quick,
    /// The figures for BENCHMARKS.md.
    Full,
}

/// Iteration counts for a depth.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Which depth.
    pub depth: Depth,
    /// Alternating blocks: each entry runs once per block, in turn with all the others.
    pub blocks: usize,
    /// Samples per entry and block (batches, or single calls).
    pub per_block: usize,
    /// Target duration of one batch.
    pub batch_time: Duration,
    /// Untimed warm-up of an entry, spread over its blocks.
    pub warmup: Duration,
}

impl Plan {
    /// The plan for `depth`.
    pub fn new(depth: Depth) -> Plan {
        let (blocks, per_block, batch_us, warm_ms) = match depth {
            Depth::Smoke => (2, 3, 10, 0),
            Depth::Quick => (6, 150, 20, 30),
            Depth::Full => (20, 350, 50, 100),
        };
        Plan {
            depth,
            blocks,
            per_block,
            batch_time: Duration::from_micros(batch_us),
            warmup: Duration::from_millis(warm_ms),
        }
    }

    /// Samples per entry over the whole run.
    pub fn samples(&self) -> usize {
        self.blocks * self.per_block
    }
}

/// How an entry is timed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timing {
    /// Batches of calls, one clock read per batch; ns per call.
    Batch,
    /// Each call alone, the sample multiplied by `scale` (0.5: a round trip reported as
    /// round trip / 2).
    Call(f64),
}

/// An operation to time, with the name of the figure it makes.
pub struct Entry<'a> {
    /// What is done ("get", "poll ping-pong", ...).
    pub name: String,
    /// Who does it ("shmem", "memcpy", "iceoryx2", ...).
    pub imp: &'static str,
    /// Bytes carried.
    pub size: usize,
    /// Which table.
    pub kind: Kind,
    /// How it is timed.
    pub timing: Timing,
    /// A peer that runs only while this entry is timed (it parks on the gate otherwise, so
    /// that a spinning or writing peer never disturbs another entry).
    pub gate: Option<&'a SharedPage>,
    /// One call.
    pub op: Box<dyn FnMut() -> io::Result<()> + 'a>,
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.imp, self.name, self.size)
    }
}

impl<'a> Entry<'a> {
    /// An entry timed as `timing`, in table `kind`.
    pub fn new(
        name: impl Into<String>,
        imp: &'static str,
        size: usize,
        kind: Kind,
        timing: Timing,
        op: impl FnMut() -> io::Result<()> + 'a,
    ) -> Entry<'a> {
        Entry {
            name: name.into(),
            imp,
            size,
            kind,
            timing,
            gate: None,
            op: Box::new(op),
        }
    }

    /// A batched operation in one process.
    pub fn op(
        name: impl Into<String>,
        imp: &'static str,
        size: usize,
        op: impl FnMut() -> io::Result<()> + 'a,
    ) -> Entry<'a> {
        Entry::new(name, imp, size, Kind::Op, Timing::Batch, op)
    }

    /// Each call timed alone, in table `kind`.
    pub fn call(
        name: impl Into<String>,
        imp: &'static str,
        size: usize,
        kind: Kind,
        op: impl FnMut() -> io::Result<()> + 'a,
    ) -> Entry<'a> {
        Entry::new(name, imp, size, kind, Timing::Call(1.0), op)
    }

    /// A round trip reported as round trip / 2.
    pub fn half(
        name: impl Into<String>,
        imp: &'static str,
        size: usize,
        kind: Kind,
        op: impl FnMut() -> io::Result<()> + 'a,
    ) -> Entry<'a> {
        Entry::new(name, imp, size, kind, Timing::Call(0.5), op)
    }

    /// Runs `peer`'s loop only while this entry is timed.
    pub fn gated(mut self, page: &'a SharedPage) -> Entry<'a> {
        self.gate = Some(page);
        self
    }

    fn unit(&self) -> &'static str {
        match self.timing {
            Timing::Call(s) if s != 1.0 => "ns (rt/2)",
            _ => "ns",
        }
    }

    /// Calls `op` until `d` has passed (at least `min` times); returns ns per call.
    fn warm(&mut self, d: Duration, min: usize) -> io::Result<f64> {
        let t0 = Instant::now();
        let mut n = 0usize;
        while n < min || t0.elapsed() < d {
            (self.op)()?;
            n += 1;
        }
        Ok(t0.elapsed().as_nanos() as f64 / n.max(1) as f64)
    }

    /// One block of `count` samples; `per_batch` calls per sample when batched.
    fn block(&mut self, count: usize, per_batch: usize, out: &mut Vec<f64>) -> io::Result<()> {
        for _ in 0..count {
            let t = Instant::now();
            match self.timing {
                Timing::Batch => {
                    for _ in 0..per_batch {
                        (self.op)()?;
                    }
                    out.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
                }
                Timing::Call(scale) => {
                    (self.op)()?;
                    out.push(t.elapsed().as_nanos() as f64 * scale);
                }
            }
        }
        Ok(())
    }
}

/// Opens a gate for the duration of a block, closing it again on drop.
struct Open<'a>(Option<&'a SharedPage>);

impl<'a> Open<'a> {
    fn new(gate: Option<&'a SharedPage>) -> Open<'a> {
        if let Some(p) = gate {
            crate::peer::set_gate(p, true);
        }
        Open(gate)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            crate::peer::set_gate(p, false);
        }
    }
}

impl Plan {
    /// Times every entry in `blocks` alternating blocks and adds a measurement per entry to
    /// `r`. An entry whose operation fails is dropped from the later blocks and recorded as
    /// skipped with the error; the others go on.
    pub fn run(&self, entries: &mut [Entry<'_>], r: &mut Results) {
        let mut per_batch = vec![1usize; entries.len()];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); entries.len()];
        let mut failed: Vec<Option<io::Error>> = entries.iter().map(|_| None).collect();
        let warm = self.warmup / self.blocks as u32;
        let first_warm = (self.per_block / 10).max(3);
        for (i, e) in entries.iter_mut().enumerate() {
            let _open = Open::new(e.gate);
            match e.warm(warm, first_warm) {
                Ok(est) if e.timing == Timing::Batch => {
                    per_batch[i] =
                        ((self.batch_time.as_nanos() as f64 / est.max(0.1)) as usize).max(1);
                }
                Ok(_) => {}
                Err(err) => failed[i] = Some(err),
            }
        }
        for _ in 0..self.blocks {
            for (i, e) in entries.iter_mut().enumerate() {
                if failed[i].is_some() {
                    continue;
                }
                let _open = Open::new(e.gate);
                let done = e
                    .warm(warm, first_warm)
                    .and_then(|_| e.block(self.per_block, per_batch[i], &mut samples[i]));
                if let Err(err) = done {
                    failed[i] = Some(err);
                }
            }
        }
        for ((e, s), (k, err)) in entries
            .iter()
            .zip(samples)
            .zip(per_batch.into_iter().zip(failed))
        {
            match err {
                Some(err) => r.skip(&format!("{e:?}"), format!("failed: {err}")),
                None => r.push(measurement(&e.name, e.imp, e.size, e.unit(), e.kind, s, k)),
            }
        }
    }
}

/// Builds a measurement.
pub fn measurement(
    name: &str,
    imp: &str,
    size: usize,
    unit: &str,
    kind: Kind,
    mut samples: Vec<f64>,
    ops_per_sample: usize,
) -> Measurement {
    Measurement {
        name: name.to_owned(),
        imp: imp.to_owned(),
        size,
        unit: unit.to_owned(),
        kind,
        summary: summarize(&mut samples),
        ops_per_sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_interleaves_entries_and_drops_failures() {
        let plan = Plan::new(Depth::Smoke);
        let order = std::cell::RefCell::new(Vec::new());
        let mut n = 0usize;
        let mut entries = vec![
            Entry::op("a", "x", 8, || {
                order.borrow_mut().push('a');
                Ok(())
            }),
            Entry::half("b", "y", 8, Kind::BusyPoll, || {
                order.borrow_mut().push('b');
                Ok(())
            }),
            Entry::call("c", "z", 8, Kind::Op, move || {
                n += 1;
                if n > 4 {
                    Err(io::Error::other("boom"))
                } else {
                    Ok(())
                }
            }),
        ];
        let mut r = Results::default();
        plan.run(&mut entries, &mut r);
        drop(entries);
        assert_eq!(r.measurements.len(), 2);
        assert_eq!(r.measurements[0].summary.n, plan.samples());
        assert_eq!(r.measurements[1].unit, "ns (rt/2)");
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].1.contains("boom"), "{:?}", r.skipped);
        // Blocks alternate: a's calls are not all before b's.
        let o = order.into_inner();
        let last_a = o.iter().rposition(|&c| c == 'a').unwrap();
        let first_b = o.iter().position(|&c| c == 'b').unwrap();
        assert!(first_b < last_a);
    }
}
