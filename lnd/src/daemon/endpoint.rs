//! A daemon's control endpoint over TCP, for a harness on another host: a connection is taken
//! only if its first line carries the run's secret token (`LNETLAB_CONTROL_TOKEN`, generated
//! per run, never logged); anything else is refused, logged by peer address, and closed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Where the token comes from...
pub const TOKEN_ENV: &str = "LNETLAB_CONTROL_TOKEN";
/// ...or the file holding it (an orchestrator's secret, mounted: `/run/secrets/...`).
pub const TOKEN_FILE_ENV: &str = "LNETLAB_CONTROL_TOKEN_FILE";
/// How long a new connection has to present its token.
const HELLO_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("--control needs the run's token in {TOKEN_ENV}, or a file named by {TOKEN_FILE_ENV} (at least 16 characters)")]
    NoToken,
    #[error("control endpoint {addr}: {e}")]
    Bind { addr: String, e: std::io::Error },
}

/// The run's token from the environment, checked for length (a short token is guessable).
pub fn token_from_env() -> Result<String, EndpointError> {
    let t = match std::env::var(TOKEN_ENV) {
        Ok(t) => Some(t),
        Err(_) => std::env::var_os(TOKEN_FILE_ENV).and_then(|f| std::fs::read_to_string(f).ok()).map(|t| t.trim().to_string()),
    };
    t.filter(|t| t.len() >= 16).ok_or(EndpointError::NoToken)
}

use crate::dev::linkio::{presented_token as presented, same_secret as same};

/// The connection the daemon's replies and events are copied to (the latest accepted one).
pub type Remote = Arc<Mutex<Option<TcpStream>>>;

/// Writes `line` to the remote controller, if one is attached; a write that fails detaches it.
pub fn copy_to(remote: &Remote, line: &str) {
    let mut r = remote.lock().unwrap();
    if let Some(s) = r.as_mut() {
        if s.write_all(line.as_bytes()).and_then(|_| s.write_all(b"\n")).is_err() {
            *r = None;
        }
    }
}

/// Listens on `addr`; each connection that presents `token` becomes the remote controller:
/// its lines go to `on_line`, and [`copy_to`] writes to it. Returns the bound address.
pub fn serve(addr: &str, token: String, remote: Remote, on_line: impl Fn(String) -> bool + Send + Sync + 'static) -> Result<SocketAddr, EndpointError> {
    let l = TcpListener::bind(addr).map_err(|e| EndpointError::Bind { addr: addr.into(), e })?;
    let bound = l.local_addr().map_err(|e| EndpointError::Bind { addr: addr.into(), e })?;
    info!(%bound, "control endpoint listening");
    let on_line = Arc::new(on_line);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(s) = conn else { continue };
            let (token, remote, on_line) = (token.clone(), remote.clone(), on_line.clone());
            std::thread::spawn(move || {
                let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_else(|_| "?".into());
                if let Err(why) = session(s, &token, &remote, &*on_line) {
                    warn!(peer, "control connection refused: {why}");
                }
            });
        }
    });
    Ok(bound)
}

/// One connection: the token first, then command lines.
fn session(s: TcpStream, token: &str, remote: &Remote, on_line: &(dyn Fn(String) -> bool + Send + Sync)) -> Result<(), &'static str> {
    let _ = s.set_read_timeout(Some(HELLO_WAIT));
    let mut r = BufReader::new(s.try_clone().map_err(|_| "cannot read it")?);
    let mut first = String::new();
    let ok = r.read_line(&mut first).is_ok() && presented(&first).is_some_and(|t| same(t.as_bytes(), token.as_bytes()));
    let mut w = s;
    if !ok {
        let _ = w.write_all(b"{\"error\":\"refused: no valid token\"}\n");
        let _ = w.shutdown(std::net::Shutdown::Both);
        return Err(if first.is_empty() { "no token line" } else { "no valid token" });
    }
    let _ = w.set_read_timeout(None);
    let _ = r.get_ref().set_read_timeout(None);
    let _ = w.write_all(b"{\"ok\":\"controller attached\"}\n");
    info!("remote controller attached");
    *remote.lock().unwrap() = Some(w);
    for line in r.lines() {
        let Ok(l) = line else { break };
        if !on_line(l) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_lines_are_read_as_json() {
        assert!(same(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same(b"abcdef0123456789", b"Abcdef0123456789"));
        assert_eq!(presented("{\"token\": \"x\"}\n").as_deref(), Some("x"));
        assert_eq!(presented("token x"), None);
        assert_eq!(presented("{\"op\": \"stats\"}"), None);
    }
}
