//! The command line: every command, its options and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const OVERVIEW: &str = "\
Named shared memory for Linux with the lifetime of a Windows named file mapping.

A *transient* segment (the default) exists only while some process holds it: the last one to
let go frees it, crash included. A *persistent* one stays until `shmem rm`. A segment holds one
value (a byte string with a version, never torn, that readers can wait on) or a map of many
keys, each such a value (`shmem map`).";

#[cfg(not(windows))]
const AFTER_HELP: &str = "\
Examples:
  shmem demo                      the Windows DLL scenario: a parent stores, a child reads
  shmem hold config &             keep the transient value 'config' alive
  shmem set config 'mode=fast'    store a value
  shmem get --text config         print it
  shmem watch config              print every change until Ctrl-C
  shmem map hold workers &        keep a transient map of many keys alive
  shmem map set workers w1 idle   set one of its keys
  shmem ls                        list segments with their attach counts
  shmem info config               who is attached, since when, with what mode
  shmem gc --dry-run              what a crash left behind

Exit codes:
  0  success
  1  error (the message on stderr names the segment and the cause)
  2  usage (bad arguments, invalid name)
  3  not found (no such segment, or a transient one that nobody holds)
  4  timeout (watch --timeout, get --wait --timeout)";

#[cfg(windows)]
const AFTER_HELP: &str = "\
Examples:
  shmem demo                      the Windows DLL scenario: a parent stores, a child reads
  shmem hold config &             keep the transient value 'config' alive
  shmem set config 'mode=fast'    store a value
  shmem get --text config         print it
  shmem watch config              print every change until Ctrl-C
  shmem ls                        list the persistent segments (transient ones cannot be)
  shmem info config               size, version, lifetime, DACL

Exit codes:
  0  success
  1  error (the message on stderr names the segment and the cause)
  2  usage (bad arguments, invalid name)
  3  not found (no such segment, or a transient one that nobody holds)
  4  timeout (watch --timeout, get --wait --timeout)
  5  not possible on Windows: `rm` of a transient segment (the kernel frees it with its last
     handle)";

/// The `shmem` command line.
#[derive(Debug, Parser)]
#[command(name = "shmem", version, about = OVERVIEW, after_help = AFTER_HELP)]
pub struct Cli {
    /// The directory that holds the segments (a tmpfs).
    #[cfg(not(windows))]
    #[arg(long, global = true, env = "SHMEM_DIR", default_value = shmem::DEFAULT_DIR)]
    pub dir: PathBuf,

    /// The directory of persistent segments (transient ones are kernel objects,
    /// Local\shmem.NAME).
    #[cfg(windows)]
    #[arg(long, global = true, env = "SHMEM_DIR", default_value_os_t = shmem::default_dir())]
    pub dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Windows DLL scenario: a parent stores a string, a child process reads it.
    #[command(after_help = concat!(
        "The parent attaches the value (capacity 4096 bytes) and stores \"This is a test \
         string\", then starts a child process and waits for it. The child attaches the same \
         name, sees created = false, and prints what it read. When both have exited the \
         segment is gone. Ctrl-C at any point leaves nothing behind.\n\n\
         Examples:\n  shmem demo\n  shmem demo --name my-map\n  shmem --dir /tmp/shm demo\n\n",
        "Exit codes: 0 success, 1 error or interrupted, 2 usage"
    ))]
    Demo(DemoArgs),

    /// The child half of `demo` (internal).
    #[command(hide = true)]
    DemoChild(DemoChildArgs),

    /// Store a value in a segment that exists (held by someone, or persistent).
    #[command(after_help = concat!(
        "A transient segment exists only while a process holds it, so `set` never creates \
         one: it would vanish as soon as `set` exits. Keep one alive with `shmem hold NAME`, \
         or make a persistent one with `shmem create NAME --size N --persistent`.\n\n\
         Examples:\n  shmem set config 'mode=fast'\n  echo hello | shmem set config -\n  \
         shmem set config --file settings.json\n\n\
         Another user's segment is written when its mode lets this user write it (0666, or \
         0660 for its group); otherwise the permission error names the segment and its mode.\n\n",
        "Exit codes: 0 stored, 1 error (e.g. too large), 2 usage, 3 no such segment"
    ))]
    Set(SetArgs),

    /// Print a segment's value (raw bytes, or --text, or --json).
    #[command(after_help = concat!(
        "Examples:\n  shmem get config > config.bin\n  shmem get --text config\n  \
         shmem get --json config\n  shmem get --wait --timeout 5000 config   \
         (waits for the next change)\n  shmem get --wait --since 7 config        \
         (returns at once if the version is no longer 7)\n\n",
        "Another user's segment is read when its mode lets this user read it: read-only when \
         it may not be written (0644). `--wait` on such a segment works when every write wakes \
         read-only waiters, which segments created with a read-without-write mode do.\n\n\
         Exit codes: 0 printed, 1 error (e.g. permission denied), 2 usage, 3 no such segment, \
         4 timeout"
    ))]
    Get(GetArgs),

    /// Print each new value, with its version, as it changes.
    #[command(after_help = concat!(
        "Sleeps until the value changes (on a futex: no polling), prints `VERSION VALUE`, and \
         waits again, until Ctrl-C or --count changes. Values that change faster than they \
         are printed are coalesced: the versions show the gap. Each value is printed on one \
         line: backslashes, newlines, other control characters and invalid UTF-8 are escaped \
         (\\n, \\t, \\\\, \\x1b, \\xff), so every byte can be read back; `--json` prints one \
         object a line instead, with the value as text when it is UTF-8 and in hexadecimal \
         otherwise; `shmem get` prints the raw bytes.\n\n\
         Examples:\n  shmem watch config\n  shmem watch -c 1 --timeout 10000 config\n  \
         shmem watch --json config\n  \
         shmem watch --since 0 config   (prints the current value first if it was ever set)\n\n\
         If the segment is removed (`shmem rm --force`) or a new generation takes its name, the \
         watch says so and exits with code 3 within a quarter of a second: it held the old \
         generation, which no new value reaches.\n\n\
         Another user's segment that this user may read but not write (0644) is watched \
         read-only, without announcing the watch to writers: segments created with such a mode \
         wake every waiter at each write, others refuse a read-only watch.\n\n",
        "Exit codes: 0 done or interrupted, 1 error, 2 usage, 3 no such segment (or removed while \
         watched), 4 timeout"
    ))]
    Watch(WatchArgs),

    /// Create a value segment of a given capacity.
    #[command(after_help = concat!(
        "A transient segment is freed when its last holder exits, so one created here vanishes \
         when this command exits unless another process holds it: use --persistent, or \
         `shmem hold NAME --size N` to create and keep one.\n\n\
         Examples:\n  shmem create config --size 4096 --persistent\n  \
         shmem create shared-cfg --size 65536 --persistent --mode 0660\n\n",
        "Exit codes: 0 created, 1 error (e.g. exists), 2 usage"
    ))]
    Create(CreateArgs),

    /// Remove a segment's name (refused while someone holds it, unless --force).
    #[command(after_help = concat!(
        "Examples:\n  shmem rm config\n  shmem rm --force config   (holders keep their memory \
         until they detach; the next opener gets a new segment)\n\n",
        "Exit codes: 0 removed, 1 error (e.g. busy), 2 usage, 3 no such segment"
    ))]
    Rm(RmArgs),

    /// Keep a value attached (created if needed) until SIGINT or SIGTERM.
    #[command(after_help = concat!(
        "Prints `holding NAME (pid P)` once attached, then sleeps. This is what a service \
         does to keep a transient segment alive; when the last holder exits it is freed.\n\n\
         Examples:\n  shmem hold config &\n  shmem hold --size 65536 big-config\n  \
         shmem hold --mode 0644 status &   (others may read and watch it, only you write)\n\n",
        "Exit codes: 0 released after a signal, 1 error, 2 usage"
    ))]
    Hold(HoldArgs),

    /// Show everything about one segment, without disturbing it.
    #[command(after_help = concat!(
        "Shows size, capacity, lifetime, version, kind, creation time, mode and owner, and \
         the attached processes with their command names. A transient segment that nobody \
         holds is never attached (that would re-create it), so its version is not shown.\n\n\
         Examples:\n  shmem info config\n  shmem info --json config\n\n",
        "Exit codes: 0 shown, 1 error, 2 usage, 3 no such segment"
    ))]
    Info(InfoArgs),

    /// List the segments: name, size, lifetime, attached count, state.
    #[command(after_help = concat!(
        "A segment nobody holds is `stale`: left by the crash of a transient segment's users \
         (`shmem gc` removes it), or a persistent one. Other files in the directory are \
         skipped, or listed as foreign with --all.\n\n\
         Examples:\n  shmem ls\n  shmem ls --all\n  shmem ls --json\n\n",
        "Exit codes: 0 listed, 1 error"
    ))]
    Ls(LsArgs),

    /// Keys and values in one segment: set, get, del, ls, watch a map (`shmem map --help`).
    #[command(after_help = concat!(
        "A map holds many keys, each with a value and the map version of its last set. Like a \
         value, a transient map lives while a process holds it (`shmem map hold NAME`); a \
         persistent one stays until `shmem rm NAME`. Keys are given as text (at most 255 \
         bytes); keys and values that are not printable are escaped as `watch` does.\n\n\
         Examples:\n  shmem map create workers --size 65536 --persistent\n  \
         shmem map set workers w1 idle\n  shmem map get workers w1\n  \
         shmem map ls workers\n  shmem map watch workers        (every key)\n  \
         shmem map watch workers w1     (one key)\n  shmem map del workers w1\n\n",
        "Exit codes: 0 success, 1 error (e.g. the map is full), 2 usage, 3 no such map or key, \
         4 timeout"
    ))]
    Map(MapArgs),

    /// Remove stale transient segments (persistent ones too with --persistent).
    #[command(after_help = concat!(
        "Never removes a segment that anyone holds, nor another user's (unless root).\n\n\
         Examples:\n  shmem gc --dry-run\n  shmem gc\n  shmem gc --persistent --json\n\n",
        "Exit codes: 0 done, 1 error"
    ))]
    Gc(GcArgs),
}

/// `shmem map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    #[command(subcommand)]
    pub command: MapCommand,
}

/// The `shmem map` commands.
#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// Create a persistent map with room for --size bytes of records.
    #[command(after_help = concat!(
        "Each record takes 16 bytes plus its key rounded up to 8 plus its value, rounded up to \
         8. A transient map \
         would be freed as this command exits: keep one with `shmem map hold NAME`.\n\n\
         Examples:\n  shmem map create workers --size 65536 --persistent --mode 0660\n\n",
        "Exit codes: 0 created, 1 error (e.g. exists), 2 usage"
    ))]
    Create(CreateArgs),

    /// Keep a map attached (created if needed) until SIGINT or SIGTERM.
    #[command(after_help = concat!(
        "Prints `holding NAME (pid P)` once attached, then sleeps.\n\n\
         Examples:\n  shmem map hold workers &\n  shmem map hold --size 1048576 telemetry\n  \
         shmem map hold --mode 0644 status &   (others may get, ls and watch it, only you \
         set)\n\n",
        "Exit codes: 0 released after a signal, 1 error, 2 usage"
    ))]
    Hold(HoldArgs),

    /// Set KEY to VALUE in a map that exists.
    #[command(after_help = concat!(
        "Prints nothing; the map version of the set with --json.\n\n\
         Examples:\n  shmem map set workers w1 busy\n  echo hi | shmem map set workers w1 -\n\n",
        "Exit codes: 0 stored, 1 error (e.g. the map is full: nothing changed), 2 usage, \
         3 no such map"
    ))]
    Set(MapSetArgs),

    /// Print the value of KEY (raw bytes, or --text, or --json).
    #[command(after_help = concat!(
        "Examples:\n  shmem map get workers w1\n  shmem map get --json workers w1\n\n",
        "Exit codes: 0 printed, 1 error, 2 usage, 3 no such map or key"
    ))]
    Get(MapGetArgs),

    /// Remove KEY from a map.
    #[command(after_help = concat!(
        "Examples:\n  shmem map del workers w1\n\n",
        "Exit codes: 0 removed, 1 error, 2 usage, 3 no such map or key"
    ))]
    Del(MapKeyArgs),

    /// List every key at one map version: KEY VERSION LENGTH VALUE.
    #[command(after_help = concat!(
        "The listing is one consistent view of the map, sorted by key.\n\n\
         Examples:\n  shmem map ls workers\n  shmem map ls --json workers\n\n",
        "Exit codes: 0 listed, 1 error, 2 usage, 3 no such map"
    ))]
    Ls(MapLsArgs),

    /// Print each change of a map (or of one KEY): VERSION set KEY VALUE, or VERSION del KEY.
    #[command(after_help = concat!(
        "Sleeps until the map changes (no polling) and prints what changed. Changes faster \
         than they are printed are coalesced: a key set twice is printed once, with its last \
         value; a key deleted meanwhile is printed as `del` with the map version at which the \
         watch saw it gone.\n\n\
         Examples:\n  shmem map watch workers\n  shmem map watch workers w1 -c 1\n  \
         shmem map watch --json workers\n\n",
        "Exit codes: 0 done or interrupted, 1 error, 2 usage, 3 no such map (or removed while \
         watched), 4 timeout"
    ))]
    Watch(MapWatchArgs),
}

/// `shmem map set`.
#[derive(Debug, Args)]
pub struct MapSetArgs {
    /// The map's name.
    pub name: String,

    /// The key.
    pub key: String,

    #[command(flatten)]
    pub input: Input,

    /// Print a JSON object with the map version of the set.
    #[arg(long)]
    pub json: bool,
}

/// `shmem map get`.
#[derive(Debug, Args)]
pub struct MapGetArgs {
    /// The map's name.
    pub name: String,

    /// The key.
    pub key: String,

    /// Print the value as UTF-8 text followed by a newline (escaped on a terminal).
    #[arg(long, conflicts_with = "json")]
    pub text: bool,

    /// Print a JSON object with the key, version and value.
    #[arg(long)]
    pub json: bool,
}

/// `shmem map del`.
#[derive(Debug, Args)]
pub struct MapKeyArgs {
    /// The map's name.
    pub name: String,

    /// The key.
    pub key: String,
}

/// `shmem map ls`.
#[derive(Debug, Args)]
pub struct MapLsArgs {
    /// The map's name.
    pub name: String,

    /// Print a JSON object with the map version and every entry.
    #[arg(long)]
    pub json: bool,
}

/// `shmem map watch`.
#[derive(Debug, Args)]
pub struct MapWatchArgs {
    /// The map's name.
    pub name: String,

    /// Watch only this key.
    pub key: Option<String>,

    #[command(flatten)]
    pub follow: Follow,
}

/// `shmem demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The segment's name.
    #[arg(long, default_value = "dllmemfilemap")]
    pub name: String,

    /// Keep the child attached until it is signalled (to show, or test, an interruption).
    #[arg(long, hide = true)]
    pub pause_child: bool,
}

/// `shmem demo-child`.
#[derive(Debug, Args)]
pub struct DemoChildArgs {
    /// The segment's name.
    pub name: String,

    /// Stay attached until signalled.
    #[arg(long)]
    pub pause: bool,
}

/// `shmem set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The segment's name.
    pub name: String,

    #[command(flatten)]
    pub input: Input,
}

/// Where the value to store comes from.
#[derive(Debug, Args)]
pub struct Input {
    /// The value; `-` reads standard input.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub value: Option<String>,

    /// Read the value from this file.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
}

/// `shmem get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The segment's name.
    pub name: String,

    /// Print the value as UTF-8 text followed by a newline (on a terminal, control
    /// characters and backslashes are escaped, so a value cannot drive the terminal).
    #[arg(long, conflicts_with = "json")]
    pub text: bool,

    /// Print a JSON object with the name, version and value.
    #[arg(long)]
    pub json: bool,

    /// Wait for the value to change before printing it.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: wait until the version differs from this one (default: the current).
    #[arg(long, requires = "wait")]
    pub since: Option<u64>,

    /// With --wait: give up after this many milliseconds (exit code 4).
    #[arg(long, value_name = "MS", requires = "wait")]
    pub timeout: Option<u64>,
}

/// `shmem watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The segment's name.
    pub name: String,

    #[command(flatten)]
    pub follow: Follow,
}

/// How a watch (`watch`, `map watch`) follows changes.
#[derive(Debug, Args)]
pub struct Follow {
    /// Exit after this many printed changes.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,

    /// Print one JSON object per change and line (with the version and the length; text when
    /// it is UTF-8, else hexadecimal).
    #[arg(long)]
    pub json: bool,

    /// Start from this version (a value's, or a map's) instead of the current one: 0 prints
    /// what was ever set first.
    #[arg(long)]
    pub since: Option<u64>,

    /// Give up after this many milliseconds in all (exit code 4).
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
}

/// `shmem create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The segment's name.
    pub name: String,

    /// The capacity in bytes: a value's largest value, or the room for a map's records.
    #[arg(long, short, value_parser = parse_size)]
    pub size: usize,

    /// Keep the segment until `shmem rm`, instead of freeing it with its last holder.
    #[arg(long)]
    pub persistent: bool,

    /// The file mode, in octal. 0644 or 0640 lets others read and watch it read-only.
    #[arg(long, short, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
}

/// `shmem rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The segment's name.
    pub name: String,

    /// Remove the name even while processes hold the segment.
    #[arg(long)]
    pub force: bool,
}

/// `shmem hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The segment's name.
    pub name: String,

    /// The capacity if the segment has to be created (default 4096 for a value, 65536 for a
    /// map); an existing one must hold at least this much.
    #[arg(long, short, value_parser = parse_size)]
    pub size: Option<usize>,

    /// The file mode, in octal, if the value (or map) has to be created. A mode that shares with
    /// group or others (0640, 0644, 0660, 0666) also lets `hold` join another user's segment.
    #[arg(long, short, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
}

/// `shmem info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The segment's name.
    pub name: String,

    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `shmem ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Also list files that are not shmem segments, as foreign.
    #[arg(long, short)]
    pub all: bool,

    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `shmem gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also remove persistent segments that nobody holds.
    #[arg(long)]
    pub persistent: bool,

    /// Only list what would be removed.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a segment needs a capacity of at least 1 byte".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a number of bytes: {e}")),
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err(format!(
            "{s:?} is not an octal file mode such as 0600 or 0640"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_modes() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("7777").is_err());
        assert!(parse_mode("").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4k").is_err());
    }
}
