//! Executables that tests write and then run, placed without the "Text file busy" race.
//!
//! Tests run on many threads, and most of them spawn processes. While this process holds a
//! file open for writing, a fork on another thread copies that descriptor into the child,
//! which keeps it until its own exec; exec'ing the file in that window fails with ETXTBSY.
//! So an executable is never opened for writing in the test process: a short-lived
//! `install` child writes it, and its descriptor dies with it before anyone runs the file.
//!
//! Included by path from the library's unit tests (src/lib.rs) and from tests/support.
#![allow(dead_code)] // each includer uses one of the two

use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `text` to `path` as a 0755 executable.
pub fn write_executable(path: &Path, text: &str) {
    let name = path
        .file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()));
    // The staging copy is opened for writing here, but it is never exec'd.
    let staging = path.with_file_name(format!(".{}.staging", name.to_string_lossy()));
    std::fs::write(&staging, text).unwrap_or_else(|e| panic!("write {}: {e}", staging.display()));
    copy_executable(&staging, path);
    std::fs::remove_file(&staging).unwrap_or_else(|e| panic!("remove {}: {e}", staging.display()));
}

/// Copies `from` to `to` as a 0755 executable (following symlinks, as `cp` does).
pub fn copy_executable(from: &Path, to: &Path) {
    let out = Command::new("install")
        .args(["-m", "0755", "--"])
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn install: {e}"));
    assert!(
        out.status.success(),
        "install {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
