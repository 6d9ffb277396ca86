//! The backends, one module each, and the factory that picks one by name.

#[cfg(feature = "cluster")]
pub mod docker;
pub mod process;
pub mod remote;
pub mod rlimits;
pub mod sim;
#[cfg(feature = "cluster")]
pub mod swarm;

use crate::cluster::backend::Backend;

/// The backend called `name`.
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Backend>> {
    match name {
        "process" => Ok(Box::new(process::ProcessBackend::default())),
        "sim" => Ok(Box::new(sim::SimBackend)),
        #[cfg(feature = "cluster")]
        "docker" => Ok(Box::new(docker::DockerBackend::new()?)),
        #[cfg(not(feature = "cluster"))]
        "docker" => anyhow::bail!("backend `docker` needs lnetlab built with `--features cluster`"),
        #[cfg(feature = "cluster")]
        "swarm" => Ok(Box::new(swarm::SwarmBackend::new()?)),
        #[cfg(not(feature = "cluster"))]
        "swarm" => anyhow::bail!("backend `swarm` needs lnetlab built with `--features cluster`"),
        other => match other.strip_prefix("remote:") {
            Some(how) => Ok(Box::new(remote::RemoteBackend::parse(how)?)),
            None => anyhow::bail!("backend `{other}` is not available (available: process, sim, docker, swarm, remote:dns:SUFFIX:PORT, remote:file:PATH)"),
        },
    }
}

/// Checks that backend `name` exists in this build, without connecting to anything.
pub fn by_name_checked(name: &str) -> anyhow::Result<()> {
    match name {
        "process" | "sim" => Ok(()),
        #[cfg(feature = "cluster")]
        "docker" => Ok(()),
        _ => by_name(name).map(|_| ()),
    }
}
