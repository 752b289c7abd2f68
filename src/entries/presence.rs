//! Who else serves from this cache directory: every hoard process holds a shared POSIX record
//! lock on `hoard.procs` in the directory for as long as it serves, so a process can ask the
//! kernel whether any *other* process holds one. When none does, the directory lease (a store
//! row written to take it and again to release it: two write transactions per miss) protects
//! against nobody and is skipped; the in-process coalescer already makes one fetch per key.
//!
//! Invariants: POSIX record locks belong to the process and vanish with it (a crashed hoard
//! never makes the others think it still serves), and closing *any* descriptor of the file
//! drops them all, so one process opens the file once per directory (a registry shared by every
//! `Presence` of the process) and counts its in-process users: two proxies of one process on one
//! directory are not alone either. A process that joins just after another found itself alone
//! may fetch a key that process is fetching too: one extra origin fetch, never a wrong answer.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File in the cache directory that serving processes lock.
pub const PRESENCE_FILE: &str = "hoard.procs";

/// Per directory: the one open descriptor and how many `Presence`s of this process use it.
type Registry = HashMap<PathBuf, (Arc<File>, usize)>;
static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// This process's membership of a cache directory's set of serving processes; leaves on drop.
#[derive(Debug)]
pub struct Presence {
    dir: PathBuf,
    file: Arc<File>,
}

impl Presence {
    /// Join the processes serving from `dir` (creating `hoard.procs` 0600 if needed).
    pub fn join(dir: &Path) -> io::Result<Presence> {
        let dir = dir.canonicalize()?;
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let map = reg.get_or_insert_with(HashMap::new);
        if let Some((file, users)) = map.get_mut(&dir) {
            *users += 1;
            return Ok(Presence {
                dir,
                file: file.clone(),
            });
        }
        let file = open_private(&dir.join(PRESENCE_FILE))?;
        set_lock(&file, libc::F_RDLCK as libc::c_short)?;
        let file = Arc::new(file);
        map.insert(dir.clone(), (file.clone(), 1));
        Ok(Presence { dir, file })
    }

    /// True when no other process serves from this directory and no other user in this one.
    /// Errors count as "not alone" (the lease is then taken, as before).
    pub fn alone(&self) -> bool {
        let users = {
            let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
            reg.as_ref()
                .and_then(|m| m.get(&self.dir))
                .map_or(usize::MAX, |(_, n)| *n)
        };
        users == 1 && matches!(other_holder(&self.file), Ok(false))
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = reg.as_mut()
            && let Some((_, users)) = map.get_mut(&self.dir)
        {
            *users -= 1;
            if *users == 0 {
                // The last user closes the descriptor, which releases the lock.
                map.remove(&self.dir);
            }
        }
    }
}

fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::store::FILE_MODE)
        .open(path)
}

fn whole_file(kind: libc::c_short) -> libc::flock {
    // SAFETY: `flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl
}

fn set_lock(file: &File, kind: libc::c_short) -> io::Result<()> {
    let fl = whole_file(kind);
    // SAFETY: a valid descriptor and a pointer to a live `flock`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Does a process other than this one hold a lock on the file? (`F_GETLK` never reports the
/// caller's own POSIX locks.)
fn other_holder(file: &File) -> io::Result<bool> {
    let mut fl = whole_file(libc::F_WRLCK as libc::c_short);
    // SAFETY: a valid descriptor and a pointer to a live `flock` the kernel fills in.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_is_alone_two_users_in_one_process_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = Presence::join(dir.path()).unwrap();
        assert!(a.alone());
        let b = Presence::join(dir.path()).unwrap();
        assert!(!a.alone() && !b.alone());
        drop(b);
        // The descriptor stays open for `a`, and with it the lock.
        assert!(a.alone());
        assert!(other_holder(&a.file).is_ok());
    }

    #[test]
    fn another_process_holding_the_file_is_seen_and_its_exit_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = Presence::join(dir.path()).unwrap();
        // A child process (flock(1) is not POSIX-record based; use a shell-free helper: the
        // child takes a read lock with fcntl through python3 when available).
        let Ok(mut child) = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys,time\n\
                 f=open(sys.argv[1],'r+')\n\
                 fcntl.lockf(f, fcntl.LOCK_SH)\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n",
            )
            .arg(dir.path().join(PRESENCE_FILE))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: python3 not found");
            return;
        };
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        assert!(!a.alone(), "another process's lock was not seen");
        drop(child.stdin.take()); // EOF: the child exits, and its lock goes with it
        child.wait().unwrap();
        assert!(a.alone(), "the lock of a process that exited still counted");
    }
}
