//! Samples, summaries, the list of measurements of one run, and the ratios between them.
//!
//! Pure code (no timing, no processes), unit-tested below.

use std::fmt::Write as _;

/// p50, p99 and mean of a set of samples (nanoseconds unless the unit says otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Number of samples.
    pub n: usize,
}

/// The value at quantile `q` (0..=1) of `sorted` by the nearest-rank method; NaN if empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `samples` and summarises them.
pub fn summarize(samples: &mut [f64]) -> Summary {
    samples.sort_by(f64::total_cmp);
    let mean = if samples.is_empty() {
        f64::NAN
    } else {
        samples.iter().sum::<f64>() / samples.len() as f64
    };
    Summary {
        p50: percentile(samples, 0.50),
        p99: percentile(samples, 0.99),
        mean,
        n: samples.len(),
    }
}

/// Which table a measurement belongs to. Busy-polling and blocking figures never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One operation in one process (copy, get, set), ns per operation.
    Op,
    /// Attaching and detaching, creating and destroying.
    Lifecycle,
    /// A ping-pong between two processes in which the waiter sleeps in the kernel.
    Blocking,
    /// A ping-pong between two processes in which the waiter spins on memory.
    BusyPoll,
    /// A request and its answer through the kernel or a server (pipe, socket, Redis).
    RoundTrip,
    /// A count, not a time (system calls).
    Count,
}

impl Kind {
    /// The name used in the JSON output and the table headings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Op => "op",
            Kind::Lifecycle => "lifecycle",
            Kind::Blocking => "blocking-wake",
            Kind::BusyPoll => "busy-poll",
            Kind::RoundTrip => "round-trip",
            Kind::Count => "count",
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// What was done ("get", "copy", "attach+detach", ...).
    pub name: String,
    /// Who did it ("shmem", "memcpy", "redis", ...).
    pub imp: String,
    /// Bytes carried (value size, or segment size for lifecycle figures).
    pub size: usize,
    /// "ns", "ns (rt/2)", "syscalls/op", ...
    pub unit: String,
    /// Which table.
    pub kind: Kind,
    /// The figures.
    pub summary: Summary,
    /// Operations timed together per sample (1 = each timed alone).
    pub ops_per_sample: usize,
}

/// The measurements of one run, and what was skipped and why.
#[derive(Debug, Default)]
pub struct Results {
    /// In the order measured.
    pub measurements: Vec<Measurement>,
    /// (what, why) for each peer or check that could not run here.
    pub skipped: Vec<(String, String)>,
}

impl Results {
    /// Adds a measurement.
    pub fn push(&mut self, m: Measurement) {
        self.measurements.push(m);
    }

    /// Records that `what` was skipped because of `why`.
    pub fn skip(&mut self, what: &str, why: impl Into<String>) {
        self.skipped.push((what.to_owned(), why.into()));
    }

    /// The measurement with this name, implementation and size.
    pub fn find(&self, key: &Key) -> Option<&Measurement> {
        self.measurements
            .iter()
            .find(|m| m.name == key.0 && m.imp == key.1 && m.size == key.2)
    }
}

/// (name, impl, size) of a measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub &'static str, pub &'static str, pub usize);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.1, self.0, size_label(self.2))
    }
}

/// A target from the issue, checked on p50 figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mark {
    /// Informative only.
    None,
    /// ours <= factor * against + plus_ns.
    AtMost { factor: f64, plus_ns: f64 },
    /// against / ours >= factor (we are at least `factor` times faster).
    FasterBy(f64),
    /// against / ours >= fraction: at least this share of the other's bandwidth.
    Bandwidth(f64),
    /// ours == 0 (a count).
    Zero,
    /// Our p99 (not p50) at most this many ns.
    P99Below(f64),
}

/// A comparison to compute: `ours` against `against` (scaled, e.g. 0.5 for a full round trip
/// compared with a round trip / 2).
#[derive(Clone, Debug)]
pub struct RatioSpec {
    /// Our measurement.
    pub ours: Key,
    /// The limit or peer; `None` for a mark on our figure alone.
    pub against: Option<Key>,
    /// Factor applied to the other figure before comparing.
    pub against_scale: f64,
    /// The target, if the issue sets one.
    pub mark: Mark,
    /// Whether the two do the same work, and if not, what differs.
    pub pair: &'static str,
}

/// A computed comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    /// "shmem get 64 B vs memcpy copy 64 B".
    pub label: String,
    /// Our p50.
    pub ours_p50: f64,
    /// The other p50 (after scaling), NaN without one.
    pub against_p50: f64,
    /// ours / against: below 1 we are faster.
    pub ratio: f64,
    /// against / ours: how many times faster we are.
    pub speedup: f64,
    /// The mark in words, empty if none.
    pub mark: String,
    /// Whether the mark holds; `None` without a mark.
    pub holds: Option<bool>,
    /// Like-for-like, or what differs.
    pub pair: &'static str,
}

/// Computes each spec whose measurements exist in `results` (others are left out).
pub fn compute_ratios(results: &Results, specs: &[RatioSpec]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for spec in specs {
        let Some(ours) = results.find(&spec.ours) else {
            continue;
        };
        let against = match &spec.against {
            Some(k) => match results.find(k) {
                Some(m) => Some((k, m.summary.p50 * spec.against_scale)),
                None => continue,
            },
            None => None,
        };
        let o = match spec.mark {
            Mark::P99Below(_) => ours.summary.p99,
            _ => ours.summary.p50,
        };
        let a = against.map_or(f64::NAN, |(_, a)| a);
        let mut label = spec.ours.to_string();
        if let Some((k, _)) = against {
            let _ = write!(label, " vs {k}");
            if spec.against_scale != 1.0 {
                let _ = write!(label, " x{}", spec.against_scale);
            }
        }
        let (mark, holds) = match spec.mark {
            Mark::None => (String::new(), None),
            Mark::AtMost { factor, plus_ns } => (
                format!("<= {factor}x + {plus_ns} ns"),
                Some(o <= factor * a + plus_ns),
            ),
            Mark::FasterBy(f) => (format!(">= {f}x faster"), Some(a / o >= f)),
            Mark::Bandwidth(f) => (
                format!(">= {:.0}% of its bandwidth", f * 100.0),
                Some(a / o >= f),
            ),
            Mark::Zero => ("0".to_owned(), Some(o == 0.0)),
            Mark::P99Below(ns) => (format!("p99 <= {ns} ns"), Some(o <= ns)),
        };
        out.push(Ratio {
            label,
            ours_p50: o,
            against_p50: a,
            ratio: o / a,
            speedup: a / o,
            mark,
            holds,
            pair: spec.pair,
        });
    }
    out
}

/// "8 B", "64 KiB", "1 MiB".
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// A figure with 3 significant digits or so.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "-".to_owned()
    } else if x >= 100.0 || x == 0.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The run as JSON: `measurements` (one object per measurement with name, impl, size, unit,
/// p50, p99, mean, plus kind, samples, ops_per_sample), `ratios`, `skipped`, `machine`.
pub fn to_json(
    results: &Results,
    ratios: &[Ratio],
    machine: serde_json::Value,
) -> serde_json::Value {
    let num = |x: f64| {
        if x.is_finite() {
            serde_json::json!(x)
        } else {
            serde_json::Value::Null
        }
    };
    let ms: Vec<_> = results
        .measurements
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name, "impl": m.imp, "size": m.size, "unit": m.unit,
                "p50": num(m.summary.p50), "p99": num(m.summary.p99), "mean": num(m.summary.mean),
                "kind": m.kind.as_str(), "samples": m.summary.n, "ops_per_sample": m.ops_per_sample,
            })
        })
        .collect();
    let rs: Vec<_> = ratios
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.label, "ours_p50": num(r.ours_p50), "against_p50": num(r.against_p50),
                "ratio": num(r.ratio), "speedup": num(r.speedup), "mark": r.mark, "holds": r.holds, "pair": r.pair,
            })
        })
        .collect();
    let skipped: Vec<_> = results
        .skipped
        .iter()
        .map(|(w, y)| serde_json::json!({"what": w, "why": y}))
        .collect();
    serde_json::json!({"machine": machine, "measurements": ms, "ratios": rs, "skipped": skipped})
}

/// The run as Markdown tables, one per kind, then the ratios.
pub fn to_markdown(results: &Results, ratios: &[Ratio]) -> String {
    let mut s = String::new();
    let kinds = [
        (Kind::Op, "Operations in one process (ns per operation)"),
        (Kind::Lifecycle, "Attach and create (ns per cycle)"),
        (
            Kind::Blocking,
            "Blocking wake-up between two processes (round trip / 2, ns)",
        ),
        (
            Kind::BusyPoll,
            "Busy polling between two processes (round trip / 2, ns)",
        ),
        (
            Kind::RoundTrip,
            "Request round trips to another process (full round trip, ns)",
        ),
        (Kind::Count, "System calls"),
    ];
    for (kind, title) in kinds {
        let rows: Vec<_> = results
            .measurements
            .iter()
            .filter(|m| m.kind == kind)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n### {title}\n");
        let _ = writeln!(
            s,
            "| what | impl | size | p50 | p99 | mean | unit | samples x ops | GB/s (p50) |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
        );
        for m in rows {
            let bw = if kind == Kind::Op && m.size >= 4096 && m.summary.p50 > 0.0 {
                format!("{:.1}", m.size as f64 / m.summary.p50)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} x {} | {} |",
                m.name,
                m.imp,
                size_label(m.size),
                fmt_num(m.summary.p50),
                fmt_num(m.summary.p99),
                fmt_num(m.summary.mean),
                m.unit,
                m.summary.n,
                m.ops_per_sample,
                bw
            );
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            s,
            "\n### Ratios (p50 unless the goal says p99; both sides interleaved)\n"
        );
        let _ = writeln!(
            s,
            "| comparison | ours | other | ours/other | other/ours | goal | holds | pair |"
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |");
        for r in ratios {
            let holds = match r.holds {
                None => "",
                Some(true) => "yes",
                Some(false) => "**no**",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                fmt_num(r.ours_p50),
                fmt_num(r.against_p50),
                fmt_num(r.ratio),
                fmt_num(r.speedup),
                r.mark,
                holds,
                r.pair
            );
        }
    }
    if !results.skipped.is_empty() {
        let _ = writeln!(s, "\n### Skipped\n");
        for (what, why) in &results.skipped {
            let _ = writeln!(s, "- {what}: {why}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, imp: &str, size: usize, p50: f64) -> Measurement {
        Measurement {
            name: name.into(),
            imp: imp.into(),
            size,
            unit: "ns".into(),
            kind: Kind::Op,
            summary: Summary {
                p50,
                p99: p50 * 2.0,
                mean: p50,
                n: 10,
            },
            ops_per_sample: 1,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = summarize(&mut v);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.mean, 50.5);
        assert_eq!(s.n, 100);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert!(summarize(&mut []).mean.is_nan());
    }

    #[test]
    fn ratios_and_marks() {
        let mut r = Results::default();
        r.push(m("copy", "memcpy", 64, 2.5));
        r.push(m("get", "shmem", 64, 20.0));
        r.push(m("round trip", "pipe", 64, 10_000.0));
        r.push(m("syscalls per set", "shmem", 64, 0.0));
        let specs = [
            RatioSpec {
                ours: Key("get", "shmem", 64),
                against: Some(Key("copy", "memcpy", 64)),
                against_scale: 1.0,
                mark: Mark::AtMost {
                    factor: 3.0,
                    plus_ns: 10.0,
                },
                pair: "",
            },
            RatioSpec {
                ours: Key("get", "shmem", 64),
                against: Some(Key("round trip", "pipe", 64)),
                against_scale: 0.5,
                mark: Mark::FasterBy(20.0),
                pair: "",
            },
            RatioSpec {
                ours: Key("syscalls per set", "shmem", 64),
                against: None,
                against_scale: 1.0,
                mark: Mark::Zero,
                pair: "",
            },
            // Missing measurement: left out, not an error.
            RatioSpec {
                ours: Key("get", "shmem", 8),
                against: Some(Key("copy", "memcpy", 8)),
                against_scale: 1.0,
                mark: Mark::None,
                pair: "",
            },
        ];
        let out = compute_ratios(&r, &specs);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].ratio, 8.0);
        assert_eq!(out[0].holds, Some(false)); // 20 > 3 * 2.5 + 10
        assert_eq!(out[0].label, "shmem get 64 B vs memcpy copy 64 B");
        assert_eq!(out[1].speedup, 250.0);
        assert_eq!(out[1].holds, Some(true));
        assert!(out[1].label.ends_with("x0.5"));
        assert_eq!(out[2].holds, Some(true));
        assert!(out[2].against_p50.is_nan());

        let json = to_json(&r, &out, serde_json::json!({}));
        let first = &json["measurements"][0];
        for field in ["name", "impl", "size", "unit", "p50", "p99", "mean"] {
            assert!(!first[field].is_null(), "{field}");
        }
        assert_eq!(json["ratios"].as_array().unwrap().len(), 3);
        assert!(json["ratios"][2]["against_p50"].is_null());
        let md = to_markdown(&r, &out);
        assert!(md.contains("| get | shmem | 64 B | 20.0 |"));
        assert!(md.contains("**no**"));
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(8), "8 B");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(8448), "8448 B");
        assert_eq!(fmt_num(1234.5), "1234");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(f64::NAN), "-");
    }
}
