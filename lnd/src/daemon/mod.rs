//! The two daemons behind thin binaries: `dmadev` (one per fabric) and `lnetd` (one per node),
//! plus the small argument and size helpers they share with the harness.

pub mod control;
pub mod dmadev;
pub mod endpoint;
pub mod inspect;
pub mod lnetd;


/// Parsed `--key value` options (a key may repeat) and bare `--flag`s.
#[derive(Debug, Default)]
pub struct Args(Vec<(String, String)>);

impl Args {
    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// Every value given for `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
    pub fn flag(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// Parses `--key value` pairs (and bare `--flag`s) after the program name, refusing unknown keys.
pub fn parse_args(args: &[String], known: &[&str], flags: &[&str]) -> anyhow::Result<Args> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(key) = a.strip_prefix("--") else {
            anyhow::bail!("unexpected argument `{a}` (options are --{})", known.join(", --"));
        };
        if flags.contains(&key) {
            out.push((key.to_string(), String::new()));
        } else if known.contains(&key) {
            let v = it.next().ok_or_else(|| anyhow::anyhow!("--{key} needs a value"))?;
            out.push((key.to_string(), v.clone()));
        } else {
            anyhow::bail!("unknown option --{key} (options are --{})", known.iter().chain(flags).copied().collect::<Vec<_>>().join(", --"));
        }
    }
    Ok(Args(out))
}

/// Parses a byte size: `4096`, `64KiB`, `8MiB`, `1GiB`, `10MB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 4096, 64KiB, 8MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

type SetFilter = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Changes the filter of the logging [`init_logging`] set up (`lnetlab ctl NODE log-level`).
static SET_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// Sets up `tracing` to stderr, or to `file` if given; level from `LNETLAB_LOG` (default info),
/// changeable later with [`set_log_level`].
pub fn init_logging(file: Option<&str>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LNETLAB_LOG").unwrap_or_else(|_| "info".into());
    match file {
        Some(f) => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(f).map_err(|e| anyhow::anyhow!("log file {f}: {e}"))?;
            install(filter, std::sync::Mutex::new(f));
        }
        None => install(filter, std::io::stderr),
    }
    Ok(())
}

fn install<W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static>(filter: tracing_subscriber::EnvFilter, w: W) {
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(w).with_filter_reloading();
    let h = b.reload_handle();
    if b.try_init().is_ok() {
        let _ = SET_FILTER.set(Box::new(move |f| h.reload(f).map_err(|e| e.to_string())));
    }
}

/// Sets the log filter (`info`, `debug`, `lnd::sock=trace,info`...) of a daemon's logging.
pub fn set_log_level(level: &str) -> Result<(), String> {
    let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log level `{level}`: {e}"))?;
    let set = SET_FILTER.get().ok_or("this node has no log of its own to set a level on")?;
    set(f)
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Parses hex text (either case).
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("hex text has odd length {}", s.len()));
    }
    let v = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("`{}` is not a hex digit", c as char)),
    };
    s.as_bytes().chunks(2).map(|p| Ok(v(p[0])? << 4 | v(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("8 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10"), Ok(vec![0, 0xab, 0x10]));
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn args() {
        let a: Vec<String> = ["--fabric", "/x", "--keep"].iter().map(|s| s.to_string()).collect();
        let m = parse_args(&a, &["fabric"], &["keep"]).unwrap();
        assert_eq!(m.get("fabric"), Some("/x"));
        assert!(m.flag("keep"));
        let r: Vec<String> = ["--nid", "1@dma", "--nid", "10.0.0.1@tcp"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_args(&r, &["nid"], &[]).unwrap().all("nid"), ["1@dma", "10.0.0.1@tcp"]);
        assert!(parse_args(&a[..1], &["fabric"], &[]).unwrap_err().to_string().contains("needs a value"));
        assert!(parse_args(&a, &["fabric"], &[]).unwrap_err().to_string().contains("unknown option --keep"));
    }
}
