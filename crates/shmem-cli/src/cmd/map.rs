//! `shmem map ...`: the keys of a multi-key store ([`shmem::Map`]).
//!
//! Each command attaches the map for as long as it runs. Like `set` for a value, none of them
//! creates a transient map except `hold`, which keeps it: one created by `set` would vanish as
//! the command exits. `watch` without a key prints what changed between two consistent views
//! of the whole map (`Map::snapshot`), so changes faster than it prints are coalesced; with a
//! key it waits on that key alone.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use shmem::{Delete, Kind, Lifetime, Map, Snapshot};

use super::{Need, Waited};
use crate::cli::{
    CreateArgs, HoldArgs, MapArgs, MapCommand, MapGetArgs, MapKeyArgs, MapLsArgs, MapSetArgs,
    MapWatchArgs,
};
use crate::error::{Failure, Result, EXIT_NOT_FOUND, EXIT_USAGE};
use crate::interrupt::Interrupt;
use crate::render::{one_line, text_or_hex};

/// The heap of a map that `hold` creates when no `--size` is given.
const DEFAULT_CAPACITY: usize = 65536;

pub fn run(dir: &Path, args: &MapArgs) -> Result {
    match &args.command {
        MapCommand::Create(a) => create(dir, a),
        MapCommand::Hold(a) => hold(dir, a),
        MapCommand::Set(a) => set(dir, a),
        MapCommand::Get(a) => get(dir, a),
        MapCommand::Del(a) => del(dir, a),
        MapCommand::Ls(a) => ls(dir, a),
        MapCommand::Watch(a) => watch(dir, a),
    }
}

/// Attaches the map `name` that somebody holds (or a persistent one), of any capacity, as
/// values are attached ([`super::attach`]): readers (`get`, `ls`, `watch`) fall back to
/// read-only when the mode refuses writing, writers (`set`, `del`) open it read-write only.
fn open_existing(dir: &Path, name: &str, need: Need) -> Result<Map> {
    super::attach(Map::builder(name).dir(dir), dir, name, Kind::Map, need)
}

fn key_not_found(map: &str, key: &str) -> Failure {
    Failure::new(
        EXIT_NOT_FOUND,
        format!("key '{}' is not in map '{map}'", one_line(key.as_bytes())),
    )
}

fn create(dir: &Path, args: &CreateArgs) -> Result {
    let name = args.name.as_str();
    if !args.persistent {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "a transient map lives only while a process holds it, so one created here would \
                 be freed as this command exits: keep one alive with `shmem map hold {name} \
                 --size {}`, or create it with --persistent",
                args.size
            ),
        ));
    }
    let map = Map::builder(name)
        .dir(dir)
        .capacity(args.size)
        .lifetime(Lifetime::Persistent)
        .mode(args.mode)
        .create_new()?;
    let (capacity, max_keys) = (map.capacity(), map.max_keys());
    let path = super::file_of(map.segment(), dir);
    drop(map);
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "created persistent map '{name}' with {capacity} bytes for records and room for \
         {max_keys} keys ({})",
        path.display()
    )?;
    writeln!(out, "it stays until `shmem rm {name}`")?;
    Ok(())
}

fn hold(dir: &Path, args: &HoldArgs) -> Result {
    // Installed before attaching, so that a signal at any time ends in a clean detach.
    let interrupt = Interrupt::install()?;
    let builder = Map::builder(&args.name).dir(dir).mode(args.mode);
    let map = match args.size {
        Some(size) => builder.capacity(size).open()?,
        None => match builder.clone().open_existing() {
            Ok(map) => map,
            Err(shmem::Error::NotFound { .. }) => builder.capacity(DEFAULT_CAPACITY).open()?,
            Err(e) => return Err(e.into()),
        },
    };
    super::hold_until_signalled(&args.name, &interrupt, map)
}

fn set(dir: &Path, args: &MapSetArgs) -> Result {
    // Read the input before attaching: reading a terminal can take as long as the user likes.
    let data = super::set::input(&args.input)?;
    let map = open_existing(dir, &args.name, Need::Write)?;
    let version = map.set(&args.key, &data)?;
    drop(map);
    if args.json {
        let mut out = io::stdout().lock();
        let line = Change::set(&args.name, args.key.as_bytes(), version, &data);
        serde_json::to_writer(&mut out, &line).map_err(io::Error::from)?;
        writeln!(out)?;
        out.flush()?;
    }
    Ok(())
}

fn get(dir: &Path, args: &MapGetArgs) -> Result {
    let map = open_existing(dir, &args.name, Need::Read)?;
    let found = map.get(&args.key)?;
    drop(map);
    let Some((bytes, version)) = found else {
        return Err(key_not_found(&args.name, &args.key));
    };
    let entry = args.json.then(|| Change {
        name: &args.name,
        op: None,
        item: Item::set(args.key.as_bytes(), version, &bytes),
    });
    super::print_value(&bytes, args.text, entry.as_ref())
}

fn del(dir: &Path, args: &MapKeyArgs) -> Result {
    let map = open_existing(dir, &args.name, Need::Write)?;
    match map.delete(&args.key)? {
        Delete::Removed { .. } => Ok(()),
        Delete::NotFound => Err(key_not_found(&args.name, &args.key)),
    }
}

/// `map ls --json`: the map at one version.
#[derive(Serialize)]
struct Listing<'a> {
    name: &'a str,
    version: u64,
    keys: usize,
    entries: Vec<Item<'a>>,
}

fn ls(dir: &Path, args: &MapLsArgs) -> Result {
    let map = open_existing(dir, &args.name, Need::Read)?;
    let snapshot = map.snapshot()?;
    drop(map);
    let mut out = io::stdout().lock();
    if args.json {
        let listing = Listing {
            name: &args.name,
            version: snapshot.version(),
            keys: snapshot.len(),
            entries: snapshot
                .iter()
                .map(|e| Item::set(&e.key, e.version, &e.value))
                .collect(),
        };
        serde_json::to_writer_pretty(&mut out, &listing).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        let keys: Vec<String> = snapshot.iter().map(|e| one_line(&e.key)).collect();
        let width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
        let width = width.max("KEY".len());
        writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  VALUE",
            "KEY", "VERSION", "LENGTH"
        )?;
        for (key, e) in keys.iter().zip(snapshot.iter()) {
            writeln!(
                out,
                "{key:<width$}  {:>8}  {:>8}  {}",
                e.version,
                e.value.len(),
                one_line(&e.value)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One key as JSON: the key and value as text when they are UTF-8, else `null` and their
/// bytes in hexadecimal; a deleted key has no value.
#[derive(Serialize)]
struct Item<'a> {
    /// The map version of the set, or the one at which the key was seen gone.
    version: u64,
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<usize>,
    /// Text, or `null` when it is not UTF-8; absent for a deleted key.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    #[serde(skip)]
    raw: (&'a [u8], Option<&'a [u8]>),
}

impl<'a> Item<'a> {
    fn set(key: &'a [u8], version: u64, value: &'a [u8]) -> Item<'a> {
        let (key_text, key_hex) = text_or_hex(key);
        let (value_text, value_hex) = text_or_hex(value);
        Item {
            version,
            key: key_text,
            key_hex,
            length: Some(value.len()),
            value: Some(value_text),
            value_hex,
            raw: (key, Some(value)),
        }
    }

    fn del(key: &'a [u8], version: u64) -> Item<'a> {
        let (key_text, key_hex) = text_or_hex(key);
        Item {
            version,
            key: key_text,
            key_hex,
            length: None,
            value: None,
            value_hex: None,
            raw: (key, None),
        }
    }
}

/// An [`Item`] with the map's name, and for a change (`watch`, `set --json`) what it was.
#[derive(Serialize)]
struct Change<'a> {
    name: &'a str,
    /// `set`, or `del` for a key that is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<&'static str>,
    #[serde(flatten)]
    item: Item<'a>,
}

impl<'a> Change<'a> {
    fn set(name: &'a str, key: &'a [u8], version: u64, value: &'a [u8]) -> Change<'a> {
        Change {
            name,
            op: Some("set"),
            item: Item::set(key, version, value),
        }
    }

    fn del(name: &'a str, key: &'a [u8], version: u64) -> Change<'a> {
        Change {
            name,
            op: Some("del"),
            item: Item::del(key, version),
        }
    }

    /// `VERSION set KEY VALUE` or `VERSION del KEY`, escaped to one line.
    fn line(&self) -> String {
        let (key, value) = self.item.raw;
        let (version, key) = (self.item.version, one_line(key));
        match value {
            Some(value) => format!("{version} set {key} {}", one_line(value)),
            None => format!("{version} del {key}"),
        }
    }
}

fn watch(dir: &Path, args: &MapWatchArgs) -> Result {
    let interrupt = Interrupt::install()?;
    let map = Arc::new(open_existing(dir, &args.name, Need::Read)?);
    let deadline = super::deadline(args.follow.timeout);
    let mut printer = Printer {
        out: io::stdout().lock(),
        json: args.follow.json,
        left: args.follow.count,
    };
    match &args.key {
        Some(key) => watch_key(
            &map,
            &args.name,
            key,
            args.follow.since,
            deadline,
            &interrupt,
            &mut printer,
        ),
        None => watch_all(
            &map,
            &args.name,
            args.follow.since,
            deadline,
            &interrupt,
            &mut printer,
        ),
    }
}

/// Prints changes until `--count` of them are printed.
struct Printer<W: Write> {
    out: W,
    json: bool,
    left: Option<u64>,
}

impl<W: Write> Printer<W> {
    fn done(&self) -> bool {
        self.left == Some(0)
    }

    fn print(&mut self, change: &Change<'_>) -> Result {
        if self.done() {
            return Ok(());
        }
        if self.json {
            serde_json::to_writer(&mut self.out, change).map_err(io::Error::from)?;
            writeln!(self.out)?;
        } else {
            writeln!(self.out, "{}", change.line())?;
        }
        self.out.flush()?;
        if let Some(left) = &mut self.left {
            *left -= 1;
        }
        Ok(())
    }
}

fn watch_key(
    map: &Arc<Map>,
    name: &str,
    key: &str,
    since: Option<u64>,
    deadline: Option<(std::time::Duration, std::time::Instant)>,
    interrupt: &Interrupt,
    printer: &mut Printer<impl Write>,
) -> Result {
    // The key's version: of its last set, 0 while it is absent. With --since V, a value set
    // after map version V is new to the watch: it prints it first.
    let start = map.get(key)?;
    let mut since_key = start.as_ref().map_or(0, |(_, version)| *version);
    if let (Some(after), Some((value, version))) = (since, &start) {
        if *version > after {
            printer.print(&Change::set(name, key.as_bytes(), *version, value))?;
        }
    }
    while !printer.done() {
        let waited = super::wait_watching_removal(map.segment(), deadline, |slice| {
            super::wait_with(map, slice, interrupt, |map, left, cancelled| {
                map.wait_changed_unless(key, since_key, left, cancelled)
            })
        })?;
        if let Waited::Interrupted = waited {
            break; // Ctrl-C is how a watch normally ends
        }
        match map.get(key)? {
            Some((value, version)) => {
                printer.print(&Change::set(name, key.as_bytes(), version, &value))?;
                since_key = version;
            }
            None if since_key != 0 => {
                printer.print(&Change::del(name, key.as_bytes(), map.version()))?;
                since_key = 0;
            }
            None => {} // set and deleted again between two looks: nothing to show
        }
    }
    Ok(())
}

fn watch_all(
    map: &Arc<Map>,
    name: &str,
    since: Option<u64>,
    deadline: Option<(std::time::Duration, std::time::Instant)>,
    interrupt: &Interrupt,
    printer: &mut Printer<impl Write>,
) -> Result {
    // What the watch has shown: key -> version of its set. With --since V, the entries set
    // after V are new to it (so --since 0 prints every key first).
    let mut seen: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut since = match since {
        Some(since) => {
            let first = map.snapshot()?;
            seen.extend(
                first
                    .iter()
                    .filter(|e| e.version <= since)
                    .map(|e| (e.key.clone(), e.version)),
            );
            since
        }
        None => {
            let first = map.snapshot()?;
            seen.extend(first.iter().map(|e| (e.key.clone(), e.version)));
            first.version()
        }
    };
    while !printer.done() {
        let waited = super::wait_watching_removal(map.segment(), deadline, |slice| {
            super::wait_with(map, slice, interrupt, |map, left, cancelled| {
                map.wait_any_unless(since, left, cancelled)
            })
        })?;
        if let Waited::Interrupted = waited {
            break;
        }
        let now = map.snapshot()?;
        print_diff(name, &mut seen, &now, printer)?;
        since = now.version();
    }
    Ok(())
}

/// Prints what changed from `seen` to `now` (sets in version order, then deletions at the
/// snapshot's version) and makes `seen` show `now`.
fn print_diff(
    name: &str,
    seen: &mut BTreeMap<Vec<u8>, u64>,
    now: &Snapshot,
    printer: &mut Printer<impl Write>,
) -> Result {
    let mut sets: Vec<_> = now
        .iter()
        .filter(|e| seen.get(&e.key) != Some(&e.version))
        .collect();
    sets.sort_by_key(|e| e.version);
    for e in &sets {
        printer.print(&Change::set(name, &e.key, e.version, &e.value))?;
    }
    let gone: Vec<Vec<u8>> = seen
        .keys()
        .filter(|k| now.get(k).is_none())
        .cloned()
        .collect();
    for key in &gone {
        printer.print(&Change::del(name, key, now.version()))?;
    }
    seen.clear();
    seen.extend(now.iter().map(|e| (e.key.clone(), e.version)));
    Ok(())
}
