//! One writer per directory: a run directory or a comparison directory is locked by the
//! process writing it, through a lock file that records who holds it (host, PID, since when,
//! what for). A second process is refused with the holder's name. A lock left by a process that
//! died on this host is taken over with a message; one held from another host (a shared file
//! system) is reported, never broken, since its process cannot be checked from here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = ".archlab.lock";

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unix time the lock was taken.
    pub since: u64,
    /// What the holder is doing there (`train`, `compare`).
    pub what: String,
    /// The holder's start time (clock ticks since boot, Linux), so that a later process that
    /// happens to get the same PID is not taken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// The process whose end also ends the holder (a comparison's run process follows the
    /// comparison), with its start time: a holder whose parent is gone is about to exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<(u32, Option<u64>)>,
}

/// The parent this process ends with (0: none); see [`exit_with_parent`].
static FOLLOWED_PARENT: AtomicU32 = AtomicU32::new(0);

/// How long a lock is waited for when its holder's parent has ended and the holder is on its
/// way out (it notices within a tenth of a second; a loaded machine can take longer).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// Ends this process soon after its parent ends (killed, interrupted), and records that in
/// every lock it takes: a rerun started right after the parent was killed then waits for this
/// process to go instead of refusing the directory as in use.
///
/// `expected` is the parent's PID as the parent gave it: a parent killed between starting this
/// process and this call has already been replaced (by init or a subreaper, which live on), so
/// the PID seen now is checked against it rather than taken as the one to follow.
pub fn exit_with_parent(expected: Option<u32>, message: &'static str) {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        if expected.is_some_and(|p| p != parent) {
            eprintln!("{message}");
            std::process::exit(1);
        }
        FOLLOWED_PARENT.store(parent, Ordering::SeqCst);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                if std::os::unix::process::parent_id() != parent {
                    eprintln!("{message}");
                    std::process::exit(1);
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (expected, message);
}

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (created if missing) for `what`, or says who holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let pid = std::process::id();
        let me = Holder {
            host: host_name(),
            pid,
            since: unix_time(),
            what: what.into(),
            started: start_time(pid),
            parent: match FOLLOWED_PARENT.load(Ordering::SeqCst) {
                0 => None,
                p => Some((p, start_time(p))),
            },
        };
        let text = serde_json::to_string(&me)? + "\n";
        // Three tries: after an orphaned holder released the lock, after taking over a stale one.
        for _ in 0..3 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    f.sync_all().ok();
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create lock file {}", path.display()));
                }
            }
            let mut holder = read_holder(&path);
            if let Some(h) = holder.clone().filter(orphaned) {
                match wait_for_orphan(&path, h) {
                    Some(h) => holder = Some(h),
                    None => continue, // released meanwhile: try again
                }
            }
            match holder {
                Some(h) if h.host != me.host => bail!(
                    "{} is in use by {} (PID {} on host {}, since {}); if that process is gone, delete {}",
                    dir.display(),
                    h.what,
                    h.pid,
                    h.host,
                    h.since,
                    path.display()
                ),
                Some(h) if h.pid == me.pid => {
                    bail!("{} is already in use by this process ({})", dir.display(), h.what)
                }
                Some(h) if process_alive(h.pid, h.started) => bail!(
                    "{} is in use by archlab {} (PID {}, since {}); wait for it to finish or stop it first",
                    dir.display(),
                    h.what,
                    h.pid,
                    h.since
                ),
                Some(h) => eprintln!(
                    "note: taking over {}: the archlab {} that locked it (PID {}) is no longer running",
                    dir.display(),
                    h.what,
                    h.pid
                ),
                // Unreadable: a holder killed between creating and writing the file.
                None => {
                    eprintln!("note: taking over {}: its lock file was empty or unreadable", dir.display())
                }
            }
            // Remove the stale lock and race for a fresh one: `create_new` lets one taker win.
            fs::remove_file(&path).ok();
        }
        bail!("{} could not be locked: another process took it over at the same time", dir.display())
    }
}

/// Who holds `dir`'s lock, if its holder is running (or is on another host, where it cannot
/// be checked), as a phrase: `archlab train, PID 42`.
pub fn live_holder(dir: &Path) -> Option<String> {
    let h = read_holder(&dir.join(LOCK_FILE))?;
    if h.host != host_name() {
        Some(format!("archlab {}, PID {} on host {}", h.what, h.pid, h.host))
    } else if process_alive(h.pid, h.started) {
        Some(format!("archlab {}, PID {}", h.what, h.pid))
    } else {
        None
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `h` is a live process of this host whose parent has ended: it exits by itself
/// within moments.
fn orphaned(h: &Holder) -> bool {
    h.host == host_name()
        && process_alive(h.pid, h.started)
        && h.parent.is_some_and(|(p, started)| !process_alive(p, started))
}

/// Waits (bounded) for an orphaned holder to exit, so that its lock is then taken over as
/// stale rather than the directory refused. Returns who holds the lock afterwards (`None`:
/// released).
fn wait_for_orphan(path: &Path, holder: Holder) -> Option<Holder> {
    eprintln!(
        "note: waiting for archlab {} (PID {}) to stop: the process that started it has ended",
        holder.what, holder.pid
    );
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if !path.exists() {
            return None;
        }
        let now = read_holder(path);
        let still_leaving = now.as_ref().is_some_and(|h| *h == holder && orphaned(h));
        if !still_leaving || start.elapsed() >= ORPHAN_GRACE {
            return now;
        }
    }
}

fn read_holder(path: &Path) -> Option<Holder> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This machine's host name (for locks seen from several machines on a shared file system).
pub fn host_name() -> String {
    let from_file = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    from_file
        .or_else(|| {
            let out = std::process::Command::new("hostname").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether process `pid` of this host is running (and, where its start time was recorded,
/// is still the process that took the lock). A zombie (exited, not yet reaped: an orphan whose
/// new parent does not reap) is not running.
fn process_alive(pid: u32, started: Option<u64>) -> bool {
    if Path::new("/proc/self").exists() {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        let zombie = stat.rfind(')').is_some_and(|i| stat[i + 1..].trim_start().starts_with(['Z', 'X']));
        return !zombie && (started.is_none() || start_time(pid) == started);
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true) // cannot tell: never break a lock that may be live
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22);
/// `None` off Linux.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("archlab-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn plant(d: &Path, holder: &Holder) {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join(LOCK_FILE), serde_json::to_string(holder).unwrap()).unwrap();
    }

    #[test]
    fn a_held_directory_is_refused_and_released_on_drop() {
        let d = dir("held");
        let lock = DirLock::acquire(&d, "train").unwrap();
        let err = DirLock::acquire(&d, "compare").unwrap_err().to_string();
        assert!(err.contains("already in use by this process"), "{err}");
        drop(lock);
        assert!(!d.join(LOCK_FILE).exists());
        DirLock::acquire(&d, "train").unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_live_process_keeps_its_lock_and_is_named() {
        let d = dir("live");
        // PID 1 is always running.
        plant(
            &d,
            &Holder {
                host: host_name(),
                pid: 1,
                since: 7,
                what: "compare".into(),
                started: start_time(1),
                parent: None,
            },
        );
        let err = DirLock::acquire(&d, "train").unwrap_err().to_string();
        assert!(err.contains("in use by archlab compare (PID 1"), "{err}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_dead_process_lock_is_taken_over() {
        let d = dir("stale");
        // A child that has exited: its PID is not running (and not yet reused).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        plant(
            &d,
            &Holder { host: host_name(), pid, since: 7, what: "train".into(), started: None, parent: None },
        );
        let lock = DirLock::acquire(&d, "train").unwrap();
        assert_eq!(read_holder(&d.join(LOCK_FILE)).unwrap().pid, std::process::id());
        drop(lock);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn another_hosts_lock_is_reported_not_broken() {
        let d = dir("remote");
        let remote = Holder {
            host: "some-other-node".into(),
            pid: 4242,
            since: 7,
            what: "train".into(),
            started: None,
            parent: None,
        };
        plant(&d, &remote);
        let err = DirLock::acquire(&d, "train").unwrap_err().to_string();
        assert!(err.contains("host some-other-node") && err.contains("delete"), "{err}");
        assert_eq!(read_holder(&d.join(LOCK_FILE)).unwrap(), remote);
        fs::remove_dir_all(d).unwrap();
    }

    /// A running process that did not take the lock (same PID, other start time: the PID was
    /// reused) does not hold it.
    #[test]
    fn a_reused_pid_does_not_hold_the_lock() {
        let d = dir("reused");
        let Some(started) = start_time(1) else { return }; // not Linux: no start times
        plant(
            &d,
            &Holder {
                host: host_name(),
                pid: 1,
                since: 7,
                what: "train".into(),
                started: Some(started + 1),
                parent: None,
            },
        );
        let lock = DirLock::acquire(&d, "train").unwrap();
        drop(lock);
        fs::remove_dir_all(d).unwrap();
    }

    /// A holder whose parent has ended is on its way out (a comparison's run process after the
    /// comparison was killed): the lock is waited for and taken over, not refused.
    #[test]
    fn an_orphaned_holders_lock_is_waited_for() {
        let d = dir("orphan");
        let mut parent = std::process::Command::new("true").spawn().unwrap();
        let parent_pid = parent.id();
        parent.wait().unwrap();
        let mut holder = std::process::Command::new("sleep").arg("0.5").spawn().unwrap();
        let pid = holder.id();
        plant(
            &d,
            &Holder {
                host: host_name(),
                pid,
                since: 7,
                what: "train".into(),
                started: start_time(pid),
                parent: Some((parent_pid, None)),
            },
        );
        let start = Instant::now();
        let lock = DirLock::acquire(&d, "train").unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300), "taken before the holder ended");
        holder.wait().unwrap();
        drop(lock);
        fs::remove_dir_all(d).unwrap();
    }

    /// A holder whose parent lives is refused at once, even though it records a parent.
    #[test]
    fn a_holder_with_a_live_parent_is_refused() {
        let d = dir("followed");
        plant(
            &d,
            &Holder {
                host: host_name(),
                pid: 1,
                since: 7,
                what: "train".into(),
                started: start_time(1),
                parent: Some((1, start_time(1))),
            },
        );
        let err = DirLock::acquire(&d, "train").unwrap_err().to_string();
        assert!(err.contains("in use by archlab train (PID 1"), "{err}");
        fs::remove_dir_all(d).unwrap();
    }
}
