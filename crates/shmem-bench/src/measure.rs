//! How long to measure, and the two timing loops: batches of fast operations, and single
//! timed calls for anything that takes a microsecond or more.

use std::time::{Duration, Instant};

use crate::stats::{summarize, Kind, Measurement};

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
    /// Batches for a per-operation figure.
    pub batches: usize,
    /// Target duration of one batch.
    pub batch_time: Duration,
    /// Timed calls for a round trip or lifecycle figure.
    pub calls: usize,
    /// Warm-up before each figure.
    pub warmup: Duration,
    /// How many times the whole list of measurements runs; samples of all rounds are pooled,
    /// so that a change of machine load during the run weighs on every figure alike.
    pub rounds: usize,
}

impl Plan {
    /// The plan for `depth`.
    pub fn new(depth: Depth) -> Plan {
        match depth {
            Depth::Smoke => Plan {
                depth,
                batches: 5,
                batch_time: Duration::from_micros(10),
                calls: 5,
                warmup: Duration::ZERO,
                rounds: 1,
            },
            Depth::Quick => Plan {
                depth,
                batches: 1_500,
                batch_time: Duration::from_micros(20),
                calls: 1_500,
                warmup: Duration::from_millis(30),
                rounds: 2,
            },
            Depth::Full => Plan {
                depth,
                batches: 7_000,
                batch_time: Duration::from_micros(50),
                calls: 7_000,
                warmup: Duration::from_millis(100),
                rounds: 3,
            },
        }
    }

    /// Times batches of `op` and returns ns per operation (p50/p99 over batches).
    ///
    /// Warm-up runs `op` for `warmup` (at least 3 times) and estimates its cost, from which
    /// the batch length is chosen so that a batch lasts about `batch_time`; the clock is then
    /// read once per batch, so its own cost (~20 ns) is spread over the batch.
    pub fn per_op<E>(&self, mut op: impl FnMut() -> Result<(), E>) -> Result<(Vec<f64>, usize), E> {
        let t0 = Instant::now();
        let mut n = 0u64;
        while n < 3 || t0.elapsed() < self.warmup {
            op()?;
            n += 1;
        }
        let est = t0.elapsed().as_nanos() as f64 / n as f64;
        let per_batch = ((self.batch_time.as_nanos() as f64 / est.max(0.1)) as usize).max(1);
        let mut samples = Vec::with_capacity(self.batches);
        for _ in 0..self.batches {
            let t = Instant::now();
            for _ in 0..per_batch {
                op()?;
            }
            samples.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        }
        Ok((samples, per_batch))
    }

    /// Times each call of `op` alone (after `calls / 10` untimed ones); `scale` multiplies
    /// each sample (0.5 for a round trip reported as round trip / 2).
    pub fn per_call<E>(
        &self,
        scale: f64,
        mut op: impl FnMut() -> Result<(), E>,
    ) -> Result<Vec<f64>, E> {
        let t0 = Instant::now();
        let mut n = 0usize;
        while n < self.calls / 10 || (n < self.calls && t0.elapsed() < self.warmup) {
            op()?;
            n += 1;
        }
        let mut samples = Vec::with_capacity(self.calls);
        for _ in 0..self.calls {
            let t = Instant::now();
            op()?;
            samples.push(t.elapsed().as_nanos() as f64 * scale);
        }
        Ok(samples)
    }
}

impl Plan {
    /// Times each call of `a` and of `b` alone, in 10 alternating blocks of `calls / 10`
    /// calls (each block with its own short warm-up), so that a limit and our figure see the
    /// same machine load. Returns the samples of `a` and of `b`.
    pub fn interleaved<E>(
        &self,
        scale: f64,
        mut a: impl FnMut() -> Result<(), E>,
        mut b: impl FnMut() -> Result<(), E>,
    ) -> Result<(Vec<f64>, Vec<f64>), E> {
        const BLOCKS: usize = 10;
        let block = Plan {
            calls: (self.calls / BLOCKS).max(1),
            warmup: self.warmup / BLOCKS as u32,
            ..*self
        };
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        for _ in 0..BLOCKS {
            sa.extend(block.per_call(scale, &mut a)?);
            sb.extend(block.per_call(scale, &mut b)?);
        }
        Ok((sa, sb))
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
        samples,
        ops_per_sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_call_the_operation_and_count_samples() {
        let plan = Plan::new(Depth::Smoke);
        let mut calls = 0usize;
        let (s, per_batch) = plan
            .per_op(|| {
                calls += 1;
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(s.len(), plan.batches);
        assert!(per_batch >= 1);
        assert!(calls >= plan.batches * per_batch);
        let s = plan.per_call(0.5, || Ok::<(), ()>(())).unwrap();
        assert_eq!(s.len(), plan.calls);
        assert!(plan.per_call(1.0, || Err::<(), _>("boom")).is_err());
        let (mut na, mut nb) = (0, 0);
        let (a, b) = plan
            .interleaved(
                1.0,
                || {
                    na += 1;
                    Ok::<(), ()>(())
                },
                || {
                    nb += 1;
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!((a.len(), b.len()), (10, 10)); // 10 blocks of at least one call
        assert!(na >= 10 && nb >= 10);
    }
}
