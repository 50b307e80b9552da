#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A program that depends on weft builds it against the patched glommio in vendor/glommio
//! (vendor/glommio/WEFT-PATCH.md), not against the registry's: a crate outside this
//! workspace that depends on weft by path resolves, offline, to the vendored copy only.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with its output in `dir`, killing it after `limit`; returns (success, output).
fn run_bounded(mut cmd: Command, dir: &Path, limit: Duration) -> (bool, String) {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("cargo runs");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    match status {
        Some(status) => (status.success(), text),
        None => (false, format!("killed after {limit:?}:\n{text}")),
    }
}

#[test]
fn a_dependent_crate_gets_the_vendored_glommio() {
    let weft = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("weft-dependent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"weft-dependent\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[dependencies]\nweft = {{ path = \"{weft}\" }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    // weft's lock file: the same versions, all in the local registry cache after weft's build.
    std::fs::copy(Path::new(weft).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .current_dir(&dir);
    let (ok, tree) = run_bounded(cargo, &dir, Duration::from_secs(120));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "cargo tree failed in a crate depending on weft:\n{tree}");
    let vendored = format!("weft-glommio v0.9.0 ({weft}/vendor/glommio)");
    assert!(
        tree.lines().any(|l| l.trim_end_matches(" (*)") == vendored),
        "no {vendored} in a dependent's tree:\n{tree}"
    );
    assert!(
        !tree.lines().any(|l| l.starts_with("glommio ")),
        "a dependent also gets the registry's glommio:\n{tree}"
    );
}
