//! What the migration tests share: a vmkit child that dies with the test, scratch paths
//! and the `-qmp` argument.

use std::path::{Path, PathBuf};
use std::process::Child;

/// A vmkit child, killed if the test ends before it does.
pub struct Vmkit(pub Child);

impl Drop for Vmkit {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A path under the test's target temp directory, unique to `prefix`, `name` and this
/// process.
pub fn scratch_path(prefix: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{prefix}-{name}-{}", std::process::id()))
}

/// `-qmp unix:SOCKET,server=on,wait=off`.
pub fn qmp_arg(socket: &Path) -> [String; 2] {
    [
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", socket.display()),
    ]
}
