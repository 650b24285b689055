//! The workspace's binaries, for tests that run them as a user would.

use std::path::PathBuf;

/// `target/<profile>/<name>`, built by `./scripts/test` before the suite.
/// Panics with what to do when it is missing: a test never skips silently.
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run ./scripts/test, which builds the workspace's binaries first",
        path.display()
    );
    path
}
