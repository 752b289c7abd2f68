//! What every recipe example shares: running its body in several copies of itself.

use std::error::Error;
use std::path::Path;

/// What examples return.
pub type Outcome = Result<(), Box<dyn Error>>;

/// In a copy (started as `<program> child <dir>`): runs `child(dir)` and returns `None`.
/// Otherwise: makes a temporary cache directory, runs `n` copies of this program on it,
/// waits for them (failing if one failed) and returns the directory.
pub fn in_processes(
    n: usize,
    child: impl Fn(&Path) -> Outcome,
) -> Result<Option<tempfile::TempDir>, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir] = args.as_slice()
        && role == "child"
    {
        child(Path::new(dir))?;
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let children = (0..n)
        .map(|_| {
            std::process::Command::new(std::env::current_exe()?)
                .arg("child")
                .arg(dir.path())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            return Err("a copy failed".into());
        }
    }
    Ok(Some(dir))
}
