//! The soak: everything at once, for a while, with crashes injected all along.
//!
//! One value and one raw segment are held by this process for the whole run (the survivors).
//! Around them: 2 writer and 6 reader processes at full speed (every read verified, versions
//! monotonic), and a stream of victims killed with SIGKILL at random moments: writers killed
//! mid-`set` (after each kill the value must be a complete earlier value and the next `set`
//! must get the lock at once) and attacher/detachers killed anywhere in the lifetime protocol.
//! At the end the survivors detach and the directory must be empty: crashes of other users
//! must never keep a segment alive or leave it behind once its last user is gone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shmem::{Segment, Value};

use crate::{checked_value, verify_value, Proc, Rng, TestDir};

/// What a soak does.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long to run.
    pub seconds: u64,
    /// Seed of the random choices (printed, so a run can be replayed).
    pub seed: u64,
    /// Go on past `seconds` until at least this many victims were killed (a slow or busy
    /// machine then runs longer instead of testing less).
    pub min_kills: u64,
}

/// What a soak found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Writers killed while writing.
    pub writer_kills: u64,
    /// Attach/detach loops killed.
    pub attacher_kills: u64,
    /// Values published by the load writers.
    pub load_sets: u64,
    /// Reads verified by the load readers.
    pub load_reads: u64,
    /// How long each `set` right after a writer was killed took (the lock taken over when the
    /// victim died holding it), in the order of the kills.
    pub takeovers: Vec<Duration>,
    /// Every invariant violation seen; empty on success.
    pub errors: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Report {
    /// Total processes killed.
    pub fn kills(&self) -> u64 {
        self.writer_kills + self.attacher_kills
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "soak: {:.1} s", secs)?;
        writeln!(
            f,
            "  kills: {} ({} writers mid-set, {} attach/detach loops)",
            self.kills(),
            self.writer_kills,
            self.attacher_kills
        )?;
        writeln!(
            f,
            "  load: {} sets ({:.0}/s), {} verified reads ({:.0}/s) by 2 writers and 6 readers",
            self.load_sets,
            self.load_sets as f64 / secs,
            self.load_reads,
            self.load_reads as f64 / secs
        )?;
        let mut t = self.takeovers.clone();
        t.sort_unstable();
        let at = |q: f64| {
            t.get(((t.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        writeln!(
            f,
            "  set right after a writer was killed: p50 {:?}, p99 {:?}, max {:?} ({} kills)",
            at(0.5),
            at(0.99),
            t.last().copied().unwrap_or_default(),
            t.len()
        )?;
        write!(f, "  errors found: {}", self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n    {e}")?;
        }
        Ok(())
    }
}

const CAP: usize = 64 * 1024;

/// Runs a soak, re-executing `exe role ...` for the other processes.
pub fn run(cfg: &Config, exe: &Path) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let dir = TestDir::new("soak");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let role = |args: &[&str]| Proc::spawn_cmd(Command::new(exe).arg("role").args(args));
    let mut rng = Rng::new(cfg.seed);

    let value = Value::builder("value")
        .dir(&d)
        .capacity(CAP)
        .lock_timeout(Duration::from_secs(2))
        .open()
        .expect("open the soak value");
    let segment = Segment::builder("segment")
        .dir(&d)
        .size(64)
        .open()
        .expect("open the soak segment");

    let millis = (cfg.seconds * 1000).to_string();
    let cap = CAP.to_string();
    let mut load: Vec<Proc> = (0..2)
        .map(|i| role(&["writer", &d, "value", &cap, &millis, &(i + 1).to_string()]))
        .collect();
    load.extend((0..6).map(|_| role(&["reader", &d, "value", &cap, &millis])));

    let deadline = started + Duration::from_secs(cfg.seconds);
    let mut victim = 0u64;
    while Instant::now() < deadline || victim < cfg.min_kills {
        victim += 1;
        let writer = victim % 2 == 0;
        let p = if writer {
            let mut p = role(&["crash-writer", &d, "value", &cap, &victim.to_string()]);
            p.expect("ready", Duration::from_secs(30));
            p
        } else {
            role(&["churn", &d, "segment", "1000000000", &victim.to_string()])
        };
        let until = Instant::now() + Duration::from_micros(rng.below(3000));
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        p.kill9();
        if writer {
            report.writer_kills += 1;
            match value.get_vec() {
                Ok((v, version)) => {
                    if let Err(e) = verify_value(&v) {
                        report
                            .errors
                            .push(format!("after kill {victim}: version {version}: {e}"));
                    }
                }
                Err(e) => report.errors.push(format!("after kill {victim}: get: {e}")),
            }
            let t0 = Instant::now();
            if let Err(e) = value.set(&checked_value(&mut rng, 4096)) {
                report.errors.push(format!("after kill {victim}: set: {e}"));
            }
            report.takeovers.push(t0.elapsed());
        } else {
            report.attacher_kills += 1;
        }
    }

    for p in load {
        let (status, out) = p.wait_output(Duration::from_secs(cfg.seconds + 60));
        let last = out.last().cloned().unwrap_or_default();
        if !status.success() {
            report.errors.push(format!("load process failed: {out:?}"));
        }
        for (key, total) in [
            ("sets=", &mut report.load_sets),
            ("reads=", &mut report.load_reads),
        ] {
            if let Some(n) = last
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|n| n.parse::<u64>().ok())
            {
                *total += n;
            }
        }
    }

    drop(segment);
    drop(value);
    let left = dir.files();
    if !left.is_empty() {
        report.errors.push(format!(
            "left behind after the last survivor detached: {left:?}"
        ));
    }
    report.elapsed = started.elapsed();
    report
}
