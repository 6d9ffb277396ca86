//! Node images do not pile up (issue 21, item 2): building a new `lnetlab-node` image keeps the
//! newest few and removes older ones and dangling ones we made; `down --all --prune` removes
//! every node image no container uses. A test binary of its own: it removes node images, which
//! the other Docker tests must not see happen under them.
#![cfg(feature = "cluster")]

mod common;
use common::*;

use std::process::Command;



fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A small image labelled as one of our node images, tagged `tag`, with content `n`.
fn fake_node_image(tag: &str, n: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("f"), n).unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM scratch\nCOPY f /\nLABEL lnetlab.image=node lnetlab.test21=images\n").unwrap();
    docker(&["build", "-q", "-t", tag, ctx.path().to_str().unwrap()]);
}

/// Our node images with a tag (`repo:tag`), and the dangling ones.
fn node_images() -> (Vec<String>, Vec<String>) {
    let tagged = docker(&["images", "--filter", "label=lnetlab.image=node", "--filter", "dangling=false", "--format", "{{.Repository}}:{{.Tag}}"]);
    let dangling = docker(&["images", "-q", "--filter", "label=lnetlab.image=node", "--filter", "dangling=true"]);
    (tagged.lines().map(String::from).collect(), dangling.lines().map(String::from).collect())
}

/// The tests of this file count and remove node images: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn node_images_are_pruned_after_a_build_and_by_down_all_prune() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let salt = std::process::id();
    // Five older node images, and a dangling one (its tag taken by a later build).
    for i in 0..5 {
        fake_node_image(&format!("lnetlab-node:test21-{salt}-{i}"), &format!("{salt} {i}"));
    }
    fake_node_image(&format!("lnetlab-node:test21-{salt}-d"), "first");
    fake_node_image(&format!("lnetlab-node:test21-{salt}-d"), "second");
    assert!(!node_images().1.is_empty(), "a dangling node image to prune");
    // New node binaries: a new image is built.
    let bins = fresh_binaries(&salt.to_string());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("compose.yml");
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["export", root().join("clusters/routed.yaml").to_str().unwrap(), "--compose", "-o", file.to_str().unwrap()])
        .env("LNETLAB_NODE_BINARIES", bins.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let new = text.split("image: ").nth(1).unwrap().split_whitespace().next().unwrap().trim_matches('\'').trim_matches('"').to_string();
    let (tagged, dangling) = node_images();
    assert!(tagged.len() <= 3 && tagged.contains(&new), "the newest three node images are kept, the new one among them: {tagged:?}");
    assert!(dangling.is_empty(), "dangling node images removed: {dangling:?}");
    // down --all --prune: every node image no container uses.
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["down", "--all", "--prune"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (tagged, _) = node_images();
    assert!(tagged.is_empty(), "down --all --prune left {tagged:?}");
}

/// Node binaries no image was built from yet (a byte appended changes nothing they do).
fn fresh_binaries(salt: &str) -> tempfile::TempDir {
    let bins = tempfile::tempdir().unwrap();
    for b in ["lnetd", "dmadev"] {
        let mut data = std::fs::read(static_dir().join(b)).unwrap();
        data.extend_from_slice(salt.as_bytes());
        std::fs::write(bins.path().join(b), data).unwrap();
        std::fs::set_permissions(bins.path().join(b), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    bins
}

#[test]
fn first_builds_started_together_beside_down_all_all_get_the_image() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Runs starting together on a machine without the image each need it built, while other
    // users' `down --all` prunes dangling node images (a build in progress holds its steps'
    // images untagged): every one gets one and the same image, and nothing is left dangling.
    let bins = fresh_binaries(&format!("together-{}", std::process::id()));
    let out = tempfile::tempdir().unwrap();
    let export = |k: usize| {
        Command::new(env!("CARGO_BIN_EXE_lnetlab"))
            .args(["export", root().join("clusters/routed.yaml").to_str().unwrap(), "--compose", "-o", out.path().join(format!("c{k}.yml")).to_str().unwrap()])
            .env("LNETLAB_NODE_BINARIES", bins.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let builds: Vec<_> = (0..3).map(export).collect();
    let downs: Vec<_> = (0..6)
        .map(|k| {
            std::thread::sleep(std::time::Duration::from_millis(150 * k));
            Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["down", "--all"]).output().unwrap()
        })
        .collect();
    let mut tags = Vec::new();
    for (k, b) in builds.into_iter().enumerate() {
        let o = b.wait_with_output().unwrap();
        assert!(o.status.success(), "build {k}: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out.path().join(format!("c{k}.yml"))).unwrap();
        tags.push(text.split("image: ").nth(1).unwrap().split_whitespace().next().unwrap().trim_matches('\'').trim_matches('"').to_string());
    }
    for d in &downs {
        assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    }
    tags.dedup();
    assert_eq!(tags.len(), 1, "one image for one set of binaries: {tags:?}");
    let (tagged, dangling) = node_images();
    assert!(tagged.contains(&tags[0]), "{tagged:?}");
    assert!(dangling.is_empty(), "a second build of one tag left its first image dangling: {dangling:?}");
}
