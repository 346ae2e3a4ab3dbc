//! The error every wrapper returns: the operation, what it acted on, and the
//! operating system's reason.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A system call failed.
    #[error("{op} failed")]
    Syscall {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A system call on a path failed.
    #[error("{op} {} failed", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The host cannot do what was asked, for a stated reason.
    #[error("{0}")]
    Unsupported(String),
    /// Something the kernel reported did not have the expected shape.
    #[error("unexpected contents in {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
    /// A helper program failed.
    #[error("{program} {status}: {stderr}")]
    Helper {
        program: String,
        status: String,
        stderr: String,
    },
}

pub type Result<T> = std::result::Result<T, SysError>;

impl SysError {
    pub fn syscall(op: &'static str, source: impl Into<io::Error>) -> Self {
        SysError::Syscall {
            op,
            source: source.into(),
        }
    }

    pub fn path(op: &'static str, path: impl AsRef<Path>, source: impl Into<io::Error>) -> Self {
        SysError::Path {
            op,
            path: path.as_ref().to_path_buf(),
            source: source.into(),
        }
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SysError::Syscall { source, .. } | SysError::Path { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// Renders an error with its whole chain of causes, for messages at the edge.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
