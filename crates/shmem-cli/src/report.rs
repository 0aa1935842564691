//! Small helpers that turn what the system knows into text: modes, owners, times, commands.

use std::time::SystemTime;

/// `0640 (rw-r-----)`.
pub fn mode(mode: u32) -> String {
    let mut rwx = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        rwx.push(if bits & 4 != 0 { 'r' } else { '-' });
        rwx.push(if bits & 2 != 0 { 'w' } else { '-' });
        rwx.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    format!("{mode:04o} ({rwx})")
}

/// The user called `uid` in `/etc/passwd`, if any.
pub fn user_name(uid: u32) -> Option<String> {
    name_in_db("/etc/passwd", uid)
}

/// The group called `gid` in `/etc/group`, if any.
pub fn group_name(gid: u32) -> Option<String> {
    name_in_db("/etc/group", gid)
}

/// `name:password:id:...` lines, as both files have them.
fn name_in_db(path: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found = fields.nth(1)?.parse::<u32>().ok()?;
        (found == id).then(|| name.to_owned())
    })
}

/// The command name of process `pid` (`/proc/PID/comm`), if it still runs.
pub fn command_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// An RFC 3339 time in UTC, to the second.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long ago `t` was, to the second (`3m 12s`).
pub fn age(t: SystemTime) -> String {
    let elapsed = t.elapsed().unwrap_or_default();
    let seconds = std::time::Duration::from_secs(elapsed.as_secs());
    humantime::format_duration(seconds).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_modes() {
        assert_eq!(mode(0o600), "0600 (rw-------)");
        assert_eq!(mode(0o640), "0640 (rw-r-----)");
        assert_eq!(mode(0o755), "0755 (rwxr-xr-x)");
    }

    #[test]
    fn finds_root() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert!(command_name(std::process::id()).is_some());
    }
}
