//! The node image: built `FROM scratch` from the static `lnetd` and `dmadev` that ship with the
//! running lnetlab (beside it, or `--node-binaries DIR`), tagged by their hash; older node
//! images pruned so they do not pile up.

use super::engine::Engine;
use bollard::query_parameters as qp;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The repository of our node images (`lnetlab-node:<hash>`).
pub const IMAGE_REPO: &str = "lnetlab-node";
/// The label every node image carries (`lnetlab.image=node`), also on dangling ones.
pub const IMAGE_LABEL: &str = "lnetlab.image=node";
/// How many node images a build keeps (the newest; concurrent runs of older lnetlabs use them).
pub const KEEP_IMAGES: usize = 3;
/// Where the node binaries are when no `--node-binaries` is given and they are not beside us.
pub const NODE_BINARIES_ENV: &str = "LNETLAB_NODE_BINARIES";
/// What the image holds besides the binaries: the directories nodes write their artifacts to.
const LAYOUT_VERSION: &[u8] = b"art-dirs-2";

/// Why there is no node image to build.
#[derive(Debug, thiserror::Error)]
pub enum NodeBinariesError {
    #[error("no {name} in {dir} (the docker backend builds its node image from the static lnetd and dmadev shipped beside lnetlab; give their directory with --node-binaries DIR or {NODE_BINARIES_ENV})")]
    Missing { name: &'static str, dir: PathBuf },
    #[error("{path} is not statically linked, so it cannot run in the FROM scratch node image: build the node binaries with RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p lnd --bins --target {arch}-unknown-linux-gnu and give that directory with --node-binaries")]
    NotStatic { path: PathBuf, arch: String },
    #[error("{path} is not a Linux executable for {want} (the Docker Engine's architecture): {why}")]
    WrongArch { path: PathBuf, want: String, why: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// The static `lnetd` and `dmadev` an image is built from.
pub struct NodeBinaries {
    pub dir: PathBuf,
    pub lnetd: Vec<u8>,
    pub dmadev: Vec<u8>,
}

impl NodeBinaries {
    /// From `dir`, else `$LNETLAB_NODE_BINARIES`, else the directory of the running lnetlab;
    /// each must be a static executable for `arch` (`uname -m` of the Engine).
    pub fn locate(dir: Option<&Path>, arch: &str) -> Result<NodeBinaries, NodeBinariesError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os(NODE_BINARIES_ENV) {
                Some(d) => PathBuf::from(d),
                None => {
                    let me = std::env::current_exe().map_err(|err| NodeBinariesError::Io { path: "current_exe".into(), err })?;
                    me.parent().map(Path::to_path_buf).unwrap_or_default()
                }
            },
        };
        let read = |name: &'static str| -> Result<Vec<u8>, NodeBinariesError> {
            let path = dir.join(name);
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NodeBinariesError::Missing { name, dir: dir.clone() }),
                Err(err) => return Err(NodeBinariesError::Io { path, err }),
            };
            check_elf(&data, arch).map_err(|why| match why {
                ElfProblem::Dynamic => NodeBinariesError::NotStatic { path: path.clone(), arch: arch.to_string() },
                ElfProblem::Other(why) => NodeBinariesError::WrongArch { path: path.clone(), want: arch.to_string(), why },
            })?;
            Ok(data)
        };
        Ok(NodeBinaries { lnetd: read("lnetd")?, dmadev: read("dmadev")?, dir })
    }

    /// The image tag: a hash of the binaries and of the image layout.
    pub fn tag(&self) -> String {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for part in [&self.lnetd[..], &self.dmadev[..], LAYOUT_VERSION] {
            for &b in part {
                h ^= b as u64;
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
        format!("{IMAGE_REPO}:{h:016x}")
    }
}

enum ElfProblem {
    Dynamic,
    Other(String),
}

/// Is `data` a 64-bit little-endian ELF executable for `arch` with no program interpreter
/// (static, static-pie included)?
fn check_elf(data: &[u8], arch: &str) -> Result<(), ElfProblem> {
    let other = |s: &str| Err(ElfProblem::Other(s.to_string()));
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return other("not an ELF file");
    }
    if data[4] != 2 || data[5] != 1 {
        return other("not a 64-bit little-endian ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let machine = match u16_at(0x12) {
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        m => return Err(ElfProblem::Other(format!("ELF machine {m}"))),
    };
    if machine != arch {
        return Err(ElfProblem::Other(format!("built for {machine}")));
    }
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    for i in 0..phnum {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(p) = data.get(o..o + 4) else { return other("truncated program headers") };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(p.try_into().expect("4 bytes")) == PT_INTERP {
            return Err(ElfProblem::Dynamic);
        }
    }
    Ok(())
}

/// Builds (unless it exists) the node image from the node binaries (`dir`, or where
/// [`NodeBinaries::locate`] finds them); returns its tag. After building a new one, older node
/// images beyond the newest [`KEEP_IMAGES`] and dangling ones are removed.
pub fn ensure_image_from(e: &Engine, dir: Option<&Path>) -> anyhow::Result<String> {
    let arch = e.architecture()?;
    let bins = NodeBinaries::locate(dir, &arch)?;
    let tag = bins.tag();
    if e.rt.block_on(e.docker.inspect_image(&tag)).is_ok() {
        return Ok(tag);
    }
    // One build at a time on this host: runs starting together wait for the first one's image
    // instead of building it again (a second build of one tag leaves the first image
    // dangling, and its prune would remove what the other is still building).
    let lock = build_lock();
    if e.rt.block_on(e.docker.inspect_image(&tag)).is_ok() {
        return Ok(tag);
    }
    let dockerfile = format!("FROM scratch\nCOPY lnetd dmadev /\nCOPY art /art\nLABEL {IMAGE_LABEL}\nENTRYPOINT [\"/lnetd\"]\n");
    let mut tb = tar::Builder::new(Vec::new());
    for (name, data, mode) in [("Dockerfile", dockerfile.as_bytes(), 0o644), ("lnetd", &bins.lnetd[..], 0o755), ("dmadev", &bins.dmadev[..], 0o755)] {
        let mut hd = tar::Header::new_gnu();
        hd.set_size(data.len() as u64);
        hd.set_mode(mode);
        hd.set_cksum();
        tb.append_data(&mut hd, name, data)?;
    }
    // Where nodes write logs, traces and captures, collected through the API at teardown.
    for d in ["art/", "art/nodes/", "art/traces/", "art/pcap/"] {
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Directory);
        hd.set_size(0);
        hd.set_mode(0o755);
        hd.set_cksum();
        tb.append_data(&mut hd, d, std::io::empty())?;
    }
    let ctx = tb.into_inner()?;
    let opts = qp::BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(&tag).rm(true).build();
    let out: Vec<_> = e.rt.block_on(e.docker.build_image(opts, None, Some(bollard::body_full(ctx.into()))).try_collect())?;
    if let Some(err) = out.iter().find_map(|i| i.error_detail.as_ref().and_then(|d| d.message.clone())) {
        anyhow::bail!("image build failed: {err}");
    }
    drop(lock);
    if let Err(err) = prune_images(e, KEEP_IMAGES, &tag) {
        tracing::warn!("pruning old node images: {err:#}");
    }
    Ok(tag)
}

/// An exclusive lock on this host's node image builds, held until dropped (`None` when the
/// lock file cannot be opened: the build then goes ahead unserialised).
fn build_lock() -> Option<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let path = std::env::temp_dir().join("lnetlab-node-image.lock");
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).or_else(|_| std::fs::File::open(&path));
    let f = match f {
        Ok(f) => f,
        Err(err) => {
            tracing::warn!("{}: {err}; building the node image without a lock", path.display());
            return None;
        }
    };
    // Every user's builds share the one lock (flock needs no write access).
    use std::os::unix::fs::PermissionsExt;
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
    // SAFETY: flock on a descriptor we own; blocks until the other build is done.
    (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0).then_some(f)
}

/// [`ensure_image_from`] the default place.
pub fn ensure_image(e: &Engine) -> anyhow::Result<String> {
    ensure_image_from(e, None)
}

/// Writes image `tag` to `file` as a tar (`docker save`); returns its size.
pub fn save_image(e: &Engine, tag: &str, file: &Path) -> anyhow::Result<u64> {
    use futures_util::StreamExt;
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?);
    let mut n = 0u64;
    e.rt.block_on(async {
        let mut s = e.docker.export_image(tag);
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            out.write_all(&chunk)?;
        }
        Ok::<(), anyhow::Error>(())
    })?;
    out.flush()?;
    Ok(n)
}

/// Tags image `tag` for `registry` and pushes it there; returns the name pushed.
pub fn push_image_to(e: &Engine, tag: &str, registry: &str) -> anyhow::Result<String> {
    use futures_util::StreamExt;
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let target = format!("{registry}/{repo}");
    e.rt.block_on(e.docker.tag_image(tag, Some(bollard::query_parameters::TagImageOptions { repo: Some(target.clone()), tag: Some(version.into()) })))?;
    let pushed = e.rt.block_on(async {
        let mut s = e.docker.push_image(&target, Some(bollard::query_parameters::PushImageOptions { tag: Some(version.into()), ..Default::default() }), None);
        while let Some(step) = s.next().await {
            let step = step.map_err(|err| anyhow::anyhow!("push to {registry}: {err}"))?;
            if let Some(err) = step.error_detail.and_then(|d| d.message) {
                anyhow::bail!("push to {registry}: {err}");
            }
        }
        Ok(())
    });
    if pushed.is_err() {
        // Not there: the registry's name for it goes too (the image stays under its own).
        let _ = e.rt.block_on(e.docker.remove_image(&format!("{target}:{version}"), None::<bollard::query_parameters::RemoveImageOptions>, None));
    }
    pushed?;
    Ok(format!("{target}:{version}"))
}

/// Our tagged node images: how many, and the bytes they hold.
pub fn node_images(e: &Engine) -> anyhow::Result<(usize, u64)> {
    let f = HashMap::from([("label", vec![IMAGE_LABEL]), ("dangling", vec!["false"])]);
    let imgs = e.rt.block_on(e.docker.list_images(Some(qp::ListImagesOptionsBuilder::default().filters(&f).build())))?;
    Ok((imgs.len(), imgs.iter().map(|i| i.size.max(0) as u64).sum()))
}

/// Removes our node images beyond the newest `keep` (never `except`), and our dangling ones.
/// Images a container uses stay (the Engine refuses; that is not an error). Returns the
/// removed images and the bytes they held. Holds the build lock: a build in progress keeps its
/// intermediate images untagged (dangling) until its last step.
pub fn prune_images(e: &Engine, keep: usize, except: &str) -> anyhow::Result<(Vec<String>, u64)> {
    let _lock = build_lock();
    let f = HashMap::from([("label", vec![IMAGE_LABEL])]);
    let mut imgs = e.rt.block_on(e.docker.list_images(Some(qp::ListImagesOptionsBuilder::default().filters(&f).build())))?;
    imgs.sort_by_key(|i| std::cmp::Reverse(i.created));
    let ours = |i: &bollard::models::ImageSummary| i.repo_tags.iter().any(|t| t.starts_with(&format!("{IMAGE_REPO}:")));
    let mut kept = 0;
    let (mut gone, mut bytes) = (Vec::new(), 0u64);
    for i in &imgs {
        let dangling = i.repo_tags.iter().all(|t| t == "<none>:<none>");
        if !dangling && !ours(i) {
            continue;
        }
        if i.repo_tags.iter().any(|t| t == except) || (!dangling && kept < keep) {
            kept += usize::from(!dangling);
            continue;
        }
        let name = i.repo_tags.iter().find(|t| *t != "<none>:<none>").cloned().unwrap_or_else(|| i.id.clone());
        // Untagging removes the image once no tag is left; dangling ones go by id.
        let targets: Vec<String> = if dangling { vec![i.id.clone()] } else { i.repo_tags.iter().filter(|t| t.starts_with(&format!("{IMAGE_REPO}:"))).cloned().collect() };
        let mut ok = true;
        for t in targets {
            ok &= e.rt.block_on(e.docker.remove_image(&t, None::<qp::RemoveImageOptions>, None)).is_ok();
        }
        if ok {
            gone.push(name);
            bytes += i.size.max(0) as u64;
        }
    }
    Ok((gone, bytes))
}
