//! The connection to the Docker Engine: a small tokio runtime and a client that negotiated the
//! Engine's API version. Everything else in the backend talks through it.

use bollard::Docker;
use std::sync::Arc;

/// A tokio runtime and a negotiated Engine client.
pub struct Engine {
    pub rt: Arc<tokio::runtime::Runtime>,
    pub docker: Docker,
}

impl Engine {
    pub fn connect() -> anyhow::Result<Engine> {
        let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?);
        let docker = rt.block_on(async {
            let d = Docker::connect_with_defaults()?;
            d.negotiate_version().await
        })?;
        Ok(Engine { rt, docker })
    }

    /// The Engine's machine architecture as `uname -m` says it (`x86_64`, `aarch64`).
    pub fn architecture(&self) -> anyhow::Result<String> {
        let info = self.rt.block_on(self.docker.info())?;
        Ok(info.architecture.unwrap_or_default())
    }
}
