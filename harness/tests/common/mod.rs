//! What the Docker test binaries share: the repository root, the static node binaries `.ci/run`
//! builds, and `lnetlab` pointed at them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where `.ci/run` builds the static `lnetd` and `dmadev` for the host's architecture.
pub fn static_dir() -> PathBuf {
    let d = root().join("target/static").join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH)).join("release");
    assert!(d.join("lnetd").is_file(), "build the static node binaries first (see .ci/run): {} has no lnetd", d.display());
    d
}

/// `lnetlab`, with the static node binaries.
pub fn lnetlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
    c.env("LNETLAB_NODE_BINARIES", static_dir());
    c
}
