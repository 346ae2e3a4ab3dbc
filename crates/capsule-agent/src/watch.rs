//! Directory watching (`WatchDir` and the polling watcher calls) on inotify.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use capsule_protocol::filesystem::{EventType, FilesystemEvent};
use capsule_protocol::{Code, ConnectError};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

/// The most directories one recursive watch follows.
const MAX_WATCHED_DIRS: usize = 8192;
/// Events a polling watcher keeps before dropping the oldest.
const MAX_BUFFERED_EVENTS: usize = 10_000;

fn mask() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::MODIFY
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ATTRIB
        | WatchFlags::DELETE_SELF
        | WatchFlags::MOVE_SELF
}

/// One inotify instance watching a directory (and, if asked, its subtree).
pub struct Watch {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor -> directory relative to the root ("" for the root).
    dirs: HashMap<i32, PathBuf>,
    root: PathBuf,
    recursive: bool,
    buf: Vec<MaybeUninit<u8>>,
}

impl Watch {
    /// Starts watching `root`. Call with the requesting user's permissions.
    pub fn new(root: &Path, recursive: bool) -> Result<Self, ConnectError> {
        crate::fs::guard_agent(root)?;
        let meta = std::fs::metadata(root).map_err(|e| crate::fs::io_error("watch", root, &e))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "watch {}: not a directory",
                root.display()
            )));
        }
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| ConnectError::internal(format!("inotify: {e}")))?;
        // SAFETY: `fd` is an open inotify descriptor owned by the AsyncFd from
        // here on; OwnedFd always reports that same descriptor.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| ConnectError::internal(format!("inotify: {e}")))?;
        let mut watch = Self {
            fd,
            dirs: HashMap::new(),
            root: root.to_path_buf(),
            recursive,
            buf: vec![MaybeUninit::uninit(); 64 * 1024],
        };
        watch
            .add(Path::new(""))
            .map_err(|e| crate::fs::io_error("watch", root, &e))?;
        if recursive {
            watch.add_subtree(Path::new(""));
        }
        Ok(watch)
    }

    fn add(&mut self, rel: &Path) -> io::Result<()> {
        if self.dirs.len() >= MAX_WATCHED_DIRS {
            return Ok(());
        }
        let wd = inotify::add_watch(self.fd.get_ref(), self.root.join(rel), mask())?;
        self.dirs.insert(wd, rel.to_path_buf());
        Ok(())
    }

    fn add_subtree(&mut self, rel: &Path) {
        let Ok(entries) = std::fs::read_dir(self.root.join(rel)) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = rel.join(entry.file_name());
                if self.add(&child).is_ok() {
                    self.add_subtree(&child);
                }
            }
        }
    }

    /// Waits for and returns the next batch of events.
    pub async fn next_events(&mut self) -> io::Result<Vec<FilesystemEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut raw = Vec::new();
            let result = guard.try_io(|fd| {
                let mut reader = inotify::Reader::new(fd.get_ref(), &mut self.buf);
                loop {
                    match reader.next() {
                        Ok(ev) => raw.push((
                            ev.wd(),
                            ev.events(),
                            ev.file_name().map(|n| n.to_string_lossy().into_owned()),
                        )),
                        Err(rustix::io::Errno::AGAIN) if !raw.is_empty() => return Ok(()),
                        Err(e) => return Err(io::Error::from(e)),
                    }
                    if reader.is_buffer_empty() {
                        return Ok(());
                    }
                }
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
            let mut events = Vec::new();
            for (wd, flags, name) in raw {
                let Some(dir) = self.dirs.get(&wd).cloned() else {
                    continue;
                };
                if flags.contains(ReadFlags::IGNORED) {
                    self.dirs.remove(&wd);
                    continue;
                }
                let rel = match &name {
                    Some(n) => dir.join(n),
                    None => dir.clone(),
                };
                let name_text = rel.display().to_string();
                let kind = if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                    if self.recursive && flags.contains(ReadFlags::ISDIR) && self.add(&rel).is_ok()
                    {
                        self.add_subtree(&rel);
                    }
                    EventType::Create
                } else if flags.contains(ReadFlags::MODIFY) {
                    EventType::Write
                } else if flags.intersects(ReadFlags::DELETE | ReadFlags::DELETE_SELF) {
                    EventType::Remove
                } else if flags.intersects(ReadFlags::MOVED_FROM | ReadFlags::MOVE_SELF) {
                    EventType::Rename
                } else if flags.contains(ReadFlags::ATTRIB) {
                    EventType::Chmod
                } else {
                    continue;
                };
                events.push(FilesystemEvent {
                    name: name_text,
                    event_type: kind,
                });
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// True while the watched root itself still exists.
    pub fn alive(&self) -> bool {
        !self.dirs.is_empty()
    }
}

/// Watchers created by `CreateWatcher`, polled with `GetWatcherEvents`.
#[derive(Default)]
pub struct Watchers {
    inner: Mutex<HashMap<String, Arc<Mutex<Vec<FilesystemEvent>>>>>,
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Watchers {
    pub fn add(&self, mut watch: Watch) -> String {
        let id = format!("{:016x}", rand_u64());
        let buffer = Arc::new(Mutex::new(Vec::new()));
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), buffer.clone());
        let task = tokio::spawn(async move {
            while let Ok(events) = watch.next_events().await {
                let mut buf = buffer.lock().unwrap_or_else(|p| p.into_inner());
                buf.extend(events);
                let overflow = buf.len().saturating_sub(MAX_BUFFERED_EVENTS);
                buf.drain(..overflow);
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), task.abort_handle());
        id
    }

    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>, ConnectError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let buf = inner.get(id).ok_or_else(|| {
            ConnectError::new(Code::NotFound, format!("no watcher with id {id:?}"))
        })?;
        Ok(std::mem::take(
            &mut *buf.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    pub fn remove(&self, id: &str) -> Result<(), ConnectError> {
        let removed = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(task) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            task.abort();
        }
        removed
            .map(|_| ())
            .ok_or_else(|| ConnectError::new(Code::NotFound, format!("no watcher with id {id:?}")))
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // The id only has to be unique within this agent; fall back to time.
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_create_write_rename_remove_recursively() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let mut watch = Watch::new(tmp.path(), true).unwrap();
        std::fs::write(tmp.path().join("sub/a.txt"), "1").unwrap();
        std::fs::rename(tmp.path().join("sub/a.txt"), tmp.path().join("b.txt")).unwrap();
        std::fs::remove_file(tmp.path().join("b.txt")).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let batch =
                tokio::time::timeout(std::time::Duration::from_secs(5), watch.next_events())
                    .await
                    .expect("events arrive")
                    .unwrap();
            seen.extend(batch.into_iter().map(|e| (e.name, e.event_type)));
            if seen
                .iter()
                .any(|(n, t)| n == "b.txt" && *t == EventType::Remove)
            {
                break;
            }
        }
        assert!(
            seen.contains(&("sub/a.txt".into(), EventType::Create)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("sub/a.txt".into(), EventType::Write)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("sub/a.txt".into(), EventType::Rename)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("b.txt".into(), EventType::Create)),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("b.txt".into(), EventType::Remove)),
            "{seen:?}"
        );
    }

    #[test]
    fn watching_a_file_or_nothing_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), "").unwrap();
        assert_eq!(
            Watch::new(&tmp.path().join("f"), false).err().unwrap().code,
            Code::InvalidArgument
        );
        assert_eq!(
            Watch::new(&tmp.path().join("nope"), false)
                .err()
                .unwrap()
                .code,
            Code::NotFound
        );
    }
}
