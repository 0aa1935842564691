//! `shmem info NAME`: everything about one segment.
//!
//! The facts come from `shmem::admin::inspect`, which does not attach (the capacity too, from the
//! size in the header). Only the version of a value, and a map's keys and bytes in use, need an
//! attach, which is short and read-only. It is skipped for a
//! transient segment that nobody holds: attaching would start a new, empty generation of it
//! (and be its last user), which is not what looking should do.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use shmem::admin::{self, State};
use shmem::{Kind, Lifetime, Map, Value};

use crate::cli::InfoArgs;
use crate::error::Result;
use crate::report;

/// One attached process.
#[derive(Serialize)]
struct Process {
    pid: u32,
    /// From `/proc/PID/comm`; `null` if it exited meanwhile.
    command: Option<String>,
}

/// How full a map is, at `version`.
#[derive(Serialize)]
struct MapUsage {
    keys: usize,
    max_keys: usize,
    /// Heap bytes the live records take.
    bytes_used: usize,
    /// Heap bytes not taken by live records (a set compacts the heap when it needs them).
    bytes_free: usize,
}

/// What `info` shows, and `info --json` prints.
#[derive(Serialize)]
struct Output {
    name: String,
    path: String,
    /// `live`, `stale`, `removed`, `corrupt`, `foreign` or `unreadable`.
    state: &'static str,
    /// Why a foreign file is not a shmem segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign: Option<String>,
    /// Why the state is corrupt, foreign or unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    kind: Option<&'static str>,
    lifetime: Option<&'static str>,
    /// `sysv` (memory in a SysV segment the kernel frees with its last attachment) or `file`.
    storage: Option<&'static str>,
    /// How writers wake waiters: `announced` (read-only watchers refused) or `every-publish`
    /// (a mode that lets someone read without writing: read-only watchers woken too).
    wake: Option<&'static str>,
    /// The SysV segment's id and attachments, while it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    shmid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<u64>,
    /// The segment's size in bytes, header included.
    size: u64,
    /// A value's largest value, a map's bytes for records, a raw segment's data bytes (from
    /// the size in the header).
    capacity: Option<usize>,
    /// The value's or the map's version (needs an attach).
    version: Option<u64>,
    /// A map's keys and heap use (needs an attach).
    #[serde(skip_serializing_if = "Option::is_none")]
    map: Option<MapUsage>,
    /// Why there is no version or capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    version_unavailable: Option<String>,
    /// RFC 3339, UTC.
    created: Option<String>,
    #[serde(skip)]
    created_ago: Option<String>,
    creator_pid: Option<u32>,
    /// Octal, such as `0600`.
    mode: String,
    #[serde(skip)]
    mode_text: String,
    uid: u32,
    user: Option<String>,
    gid: u32,
    group: Option<String>,
    /// The number of attached handles.
    attached: usize,
    processes: Vec<Process>,
}

pub fn run(dir: &Path, args: &InfoArgs) -> Result {
    let info = admin::inspect(dir, &args.name)?;
    let state = info.state.as_str();
    let reason = info.state.reason().map(str::to_owned);
    let foreign = match &info.state {
        State::Foreign(r) => Some(r.clone()),
        _ => None,
    };
    let peeked = peek(dir, &info);
    let output = Output {
        name: info.name.clone(),
        path: info.path.display().to_string(),
        state,
        foreign,
        reason,
        kind: info.header.map(|h| h.kind.as_str()),
        lifetime: info.header.map(|h| h.lifetime.as_str()),
        storage: info.header.map(|h| h.storage.as_str()),
        wake: info.header.map(|h| h.wake.as_str()),
        shmid: info.memory.map(|m| m.shmid),
        attachments: info.memory.map(|m| m.attachments),
        size: info.size,
        capacity: info.capacity(),
        version: peeked.as_ref().ok().map(|p| p.version),
        map: peeked
            .as_ref()
            .ok()
            .and_then(|p| p.map.as_ref())
            .map(|u| MapUsage {
                keys: u.keys,
                max_keys: u.max_keys,
                bytes_used: u.live_bytes,
                bytes_free: u.heap_bytes.saturating_sub(u.live_bytes),
            }),
        version_unavailable: peeked.err(),
        created: info.header.map(|h| report::time(h.created)),
        created_ago: info.header.map(|h| report::age(h.created)),
        creator_pid: info.header.map(|h| h.creator_pid),
        mode: format!("{:04o}", info.mode),
        mode_text: report::mode(info.mode),
        uid: info.uid,
        user: report::user_name(info.uid),
        gid: info.gid,
        group: report::group_name(info.gid),
        attached: info.attached,
        processes: info
            .pids
            .iter()
            .map(|&pid| Process {
                pid,
                command: report::command_name(pid),
            })
            .collect(),
    };

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &output).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        print(&mut out, &output)?;
    }
    out.flush()?;
    Ok(())
}

/// What an attach shows: the version, and a map's usage.
struct Peeked {
    version: u64,
    map: Option<shmem::Usage>,
}

/// The value's or map's version (and a map's usage), or why they are not known.
fn peek(dir: &Path, info: &admin::Info) -> Result<Peeked, String> {
    let Some(header) = info.header else {
        return Err("the header is not readable".into());
    };
    let layout = match header.kind {
        Kind::Raw => return Err("a raw segment has no version".into()),
        Kind::Value => {
            "a value layout (256 bytes of header and control, then two equal slots of a \
             multiple of 64 bytes)"
        }
        Kind::Map => "a map layout",
        _ => {
            return Err(format!(
                "a segment of kind {} has no version",
                header.kind.as_str()
            ))
        }
    };
    if info.capacity().is_none() {
        return Err(format!("its size of {} bytes is not {layout}", header.size));
    }
    if info.state == State::Stale && header.lifetime == Lifetime::Transient {
        return Err("nobody holds it, and attaching would start it anew".into());
    }
    // A sharing mode is how another user's segment is accepted (nothing is created). A value
    // is peeked read-only: that needs only read permission and writes nothing; a map has no
    // read-only handle yet, so peeking it needs write permission.
    let peeked = match header.kind {
        Kind::Map => Map::builder(&info.name)
            .dir(dir)
            .mode(0o666)
            .open_existing()
            .and_then(|map| {
                let usage = map.usage()?;
                Ok(Peeked {
                    version: usage.version,
                    map: Some(usage),
                })
            }),
        _ => Value::builder(&info.name)
            .dir(dir)
            .access(shmem::Access::ReadOnly)
            .mode(0o666)
            .open_existing()
            .map(|value| Peeked {
                version: value.version(),
                map: None,
            }),
    };
    peeked.map_err(|e| match e {
        shmem::Error::NotFound { .. } => "its last holder let go meanwhile".into(),
        e => e.to_string(),
    })
}

fn print(out: &mut impl Write, o: &Output) -> io::Result<()> {
    let unknown = || match &o.version_unavailable {
        Some(why) => format!("unknown ({why})"),
        None => "unknown".into(),
    };
    writeln!(out, "name:       {}", o.name)?;
    writeln!(out, "path:       {}", o.path)?;
    match &o.reason {
        Some(reason) => writeln!(out, "state:      {}: {reason}", o.state)?,
        None => writeln!(out, "state:      {}", o.state)?,
    }
    writeln!(out, "kind:       {}", o.kind.unwrap_or("unknown"))?;
    writeln!(out, "lifetime:   {}", o.lifetime.unwrap_or("unknown"))?;
    match (o.storage, o.shmid, o.attachments) {
        (Some(storage), Some(id), Some(n)) => {
            writeln!(out, "storage:    {storage} (id {id}, {n} attachment(s))")?
        }
        (Some(storage), _, _) => writeln!(out, "storage:    {storage}")?,
        _ => writeln!(out, "storage:    unknown")?,
    }
    match o.wake {
        Some("every-publish") => writeln!(
            out,
            "waiters:    woken at every set (read-only watchers too)"
        )?,
        Some(_) => writeln!(
            out,
            "waiters:    woken when they announce themselves (read-only watchers refused)"
        )?,
        None => {}
    }
    writeln!(out, "size:       {} bytes", o.size)?;
    match o.capacity {
        Some(capacity) => writeln!(out, "capacity:   {capacity} bytes")?,
        None => writeln!(out, "capacity:   {}", unknown())?,
    }
    match o.version {
        Some(version) => writeln!(out, "version:    {version}")?,
        None => writeln!(out, "version:    {}", unknown())?,
    }
    if let Some(m) = &o.map {
        writeln!(out, "keys:       {} of at most {}", m.keys, m.max_keys)?;
        writeln!(
            out,
            "records:    {} bytes used, {} free",
            m.bytes_used, m.bytes_free
        )?;
    }
    match (&o.created, &o.created_ago, o.creator_pid) {
        (Some(at), Some(ago), Some(pid)) => {
            writeln!(out, "created:    {at} ({ago} ago) by pid {pid}")?;
        }
        _ => writeln!(out, "created:    unknown")?,
    }
    writeln!(out, "mode:       {}", o.mode_text)?;
    let user = o.user.as_deref().unwrap_or("?");
    let group = o.group.as_deref().unwrap_or("?");
    writeln!(
        out,
        "owner:      {user} (uid {}), group {group} (gid {})",
        o.uid, o.gid
    )?;
    writeln!(out, "attached:   {}", o.attached)?;
    if o.processes.is_empty() {
        writeln!(out, "processes:  none")?;
    }
    for (i, p) in o.processes.iter().enumerate() {
        let label = if i == 0 { "processes:" } else { "" };
        let command = p.command.as_deref().unwrap_or("(exited)");
        writeln!(out, "{label:<11} {} {command}", p.pid)?;
    }
    Ok(())
}
