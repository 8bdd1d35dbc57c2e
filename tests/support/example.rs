//! The examples some tests run as processes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The built example `name`, next to the running test binary; panics, saying what to run, when
/// it is missing or older than its sources (`examples/{name}.rs` and `src/`).
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("examples")
        .join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is not built: run `cargo build --examples` first (a plain `cargo test` builds it)",
                path.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = newest(&root.join(format!("examples/{name}.rs"))).max(newest(&root.join("src")));
    assert!(
        source <= built,
        "{} is older than its sources: run `cargo build --examples` again",
        path.display()
    );
    path
}

/// The built example `name`, next to the running test binary, if cargo built it (a plain
/// `cargo test --all-features` does).
pub fn if_built(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

/// A child process, killed (and waited for) on drop.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The newest modification time of `path` or of any file under it.
fn newest(path: &Path) -> SystemTime {
    let metadata = std::fs::metadata(path).expect("source");
    let mut time = metadata.modified().expect("mtime");
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path).expect("source dir") {
            time = time.max(newest(&entry.expect("entry").path()));
        }
    }
    time
}
