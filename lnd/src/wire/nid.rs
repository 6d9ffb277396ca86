//! NIDs and nets: Lustre's 64-bit `lnet_nid_t`, LND type numbers and the `addr@net` text forms.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// How an LND prints the address part of its NIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddrFmt {
    Ipv4,
    Decimal,
}

/// An LND type number (bits 55..48 of a NID). Numbers are permanent in Lustre.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LndType(pub u8);

impl LndType {
    pub const SOCKLND: LndType = LndType(2);
    pub const O2IBLND: LndType = LndType(5);
    pub const LOLND: LndType = LndType(9);
    pub const GNILND: LndType = LndType(13);
    pub const KFILND: LndType = LndType(16);
    /// Our emulated DMA fabric. Lustre has assigned 1..=19; 0xD4 is far above them and
    /// unlikely to collide. It exists only between lnetlab nodes, never on a kernel wire.
    pub const DMALND: LndType = LndType(0xD4);

    const TABLE: &'static [(u8, &'static str, AddrFmt)] = &[
        (2, "tcp", AddrFmt::Ipv4),
        (5, "o2ib", AddrFmt::Ipv4),
        (9, "lo", AddrFmt::Decimal),
        (13, "gni", AddrFmt::Decimal),
        (14, "gip", AddrFmt::Ipv4),
        (15, "ptlf", AddrFmt::Decimal),
        (16, "kfi", AddrFmt::Decimal),
        (18, "efa", AddrFmt::Ipv4),
        (19, "bxi3f", AddrFmt::Decimal),
        (0xD4, "dma", AddrFmt::Decimal),
    ];

    fn entry(self) -> Option<(&'static str, AddrFmt)> {
        Self::TABLE.iter().find(|e| e.0 == self.0).map(|e| (e.1, e.2))
    }

    fn by_name(name: &str) -> Option<LndType> {
        Self::TABLE.iter().find(|e| e.1 == name).map(|e| LndType(e.0))
    }

    /// The LND's name in NID text, if we know it.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|e| e.0)
    }
}

/// Errors from parsing NID, net or process-id text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NidParseError {
    #[error("`{0}`: expected `<addr>@<net>`, e.g. `10.0.0.2@tcp` or `7@dma`")]
    MissingAt(String),
    #[error("`{0}`: unknown network type (known: tcp, o2ib, lo, gni, kfi, efa, dma, ...)")]
    UnknownNet(String),
    #[error("`{0}`: network number must be 0..=65535")]
    BadNetNum(String),
    #[error("`{addr}` is not a valid address for net `{net}` ({want})")]
    BadAddr { addr: String, net: String, want: &'static str },
    #[error("`{0}`: expected `<pid>-<nid>`, e.g. `12345-7@dma`")]
    BadPid(String),
}

/// A network: LND type and network number (`tcp1`, `dma0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net(pub u32);

impl Net {
    pub const LO: Net = Net((9u32) << 16);

    pub fn new(lnd: LndType, num: u16) -> Net {
        Net(((lnd.0 as u32) << 16) | num as u32)
    }
    pub fn lnd(self) -> LndType {
        LndType((self.0 >> 16) as u8)
    }
    pub fn num(self) -> u16 {
        self.0 as u16
    }
    /// The NID with this net and the given address.
    pub fn nid(self, addr: u32) -> Nid {
        Nid(((self.0 as u64) << 32) | addr as u64)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lnd().name() {
            Some(n) if self.num() == 0 => write!(f, "{n}"),
            Some(n) => write!(f, "{n}{}", self.num()),
            None => write!(f, "<{}:{}>", self.lnd().0, self.num()),
        }
    }
}

impl FromStr for Net {
    type Err = NidParseError;
    fn from_str(s: &str) -> Result<Net, NidParseError> {
        let name = s.trim_end_matches(|c: char| c.is_ascii_digit());
        let num = &s[name.len()..];
        let lnd = LndType::by_name(name).ok_or_else(|| NidParseError::UnknownNet(s.to_string()))?;
        let num = if num.is_empty() {
            0
        } else {
            num.parse::<u16>().map_err(|_| NidParseError::BadNetNum(s.to_string()))?
        };
        Ok(Net::new(lnd, num))
    }
}

/// A 64-bit NID (`lnet_nid_t`): `net << 32 | addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nid(pub u64);

impl Nid {
    /// LNET_NID_ANY, printed `<?>`.
    pub const ANY: Nid = Nid(u64::MAX);
    /// `0@lo`, the loopback NID every node has.
    pub const LO_0: Nid = Nid(0x0009_0000_0000_0000);

    pub fn net(self) -> Net {
        Net((self.0 >> 32) as u32)
    }
    pub fn addr(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for Nid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Nid::ANY {
            return write!(f, "<?>");
        }
        let net = self.net();
        match net.lnd().entry() {
            Some((_, AddrFmt::Ipv4)) => write!(f, "{}@{net}", Ipv4Addr::from(self.addr())),
            Some((_, AddrFmt::Decimal)) => write!(f, "{}@{net}", self.addr()),
            None => write!(f, "{:x}@{net}", self.addr()),
        }
    }
}

impl FromStr for Nid {
    type Err = NidParseError;
    fn from_str(s: &str) -> Result<Nid, NidParseError> {
        let s = s.trim();
        if s == "<?>" {
            return Ok(Nid::ANY);
        }
        let (addr, net) = s.rsplit_once('@').ok_or_else(|| NidParseError::MissingAt(s.to_string()))?;
        let net: Net = net.parse()?;
        let (_, fmt) = net.lnd().entry().expect("parsed nets are known");
        let bad = |want| NidParseError::BadAddr { addr: addr.to_string(), net: net.to_string(), want };
        let addr = match fmt {
            AddrFmt::Ipv4 => u32::from(addr.parse::<Ipv4Addr>().map_err(|_| bad("dotted IPv4"))?),
            AddrFmt::Decimal => addr.parse::<u32>().map_err(|_| bad("decimal u32"))?,
        };
        Ok(net.nid(addr))
    }
}

/// LNet process ids (`lnet_process_id`): a NID and a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub nid: Nid,
    pub pid: u32,
}

impl ProcessId {
    /// LNET_PID_LUSTRE: the pid of all kernel Lustre traffic.
    pub const PID_LUSTRE: u32 = 12345;
    pub const PID_ANY: u32 = u32::MAX;
    pub const PID_USERFLAG: u32 = 0x8000_0000;
    pub const ANY: ProcessId = ProcessId { nid: Nid::ANY, pid: u32::MAX };

    pub fn new(nid: Nid, pid: u32) -> ProcessId {
        ProcessId { nid, pid }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pid & Self::PID_USERFLAG != 0 && self.pid != Self::PID_ANY {
            write!(f, "U{}-{}", self.pid & !Self::PID_USERFLAG, self.nid)
        } else {
            write!(f, "{}-{}", self.pid as i32, self.nid)
        }
    }
}

impl FromStr for ProcessId {
    type Err = NidParseError;
    fn from_str(s: &str) -> Result<ProcessId, NidParseError> {
        let (pid, nid) = s.split_once('-').ok_or_else(|| NidParseError::BadPid(s.to_string()))?;
        let (user, pid) = match pid.strip_prefix('U') {
            Some(p) => (true, p),
            None => (false, pid),
        };
        let mut pid: u32 = pid.parse().map_err(|_| NidParseError::BadPid(s.to_string()))?;
        if user {
            pid |= Self::PID_USERFLAG;
        }
        Ok(ProcessId { nid: nid.parse()?, pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        let n: Nid = "192.168.1.2@tcp".parse().unwrap();
        assert_eq!(n.0, 0x0002_0000_C0A8_0102);
        assert_eq!("10.0.0.1@o2ib1".parse::<Nid>().unwrap().0, 0x0005_0001_0A00_0001);
        assert_eq!("5@gni".parse::<Nid>().unwrap().0, 0x000D_0000_0000_0005);
        assert_eq!("0@lo".parse::<Nid>().unwrap(), Nid::LO_0);
        assert_eq!(n.to_string(), "192.168.1.2@tcp");
        assert_eq!("10.0.0.2@tcp1".parse::<Nid>().unwrap().to_string(), "10.0.0.2@tcp1");
        assert_eq!("10.0.0.2@tcp0".parse::<Nid>().unwrap().to_string(), "10.0.0.2@tcp");
        let d: Nid = "7@dma2".parse().unwrap();
        assert_eq!(d.net(), Net::new(LndType::DMALND, 2));
        assert_eq!(d.addr(), 7);
        assert_eq!(d.to_string(), "7@dma2");
        assert_eq!(Nid::ANY.to_string(), "<?>");
        assert_eq!(Nid(0x0063_0000_0000_00ff).to_string(), "ff@<99:0>");
    }

    #[test]
    fn bad_text_names_the_problem() {
        assert!(matches!("7dma".parse::<Nid>(), Err(NidParseError::MissingAt(_))));
        assert!(matches!("7@foo".parse::<Nid>(), Err(NidParseError::UnknownNet(_))));
        assert!(matches!("7@tcp".parse::<Nid>(), Err(NidParseError::BadAddr { .. })));
        assert!(matches!("x@dma".parse::<Nid>(), Err(NidParseError::BadAddr { .. })));
        assert!(matches!("1@dma99999".parse::<Nid>(), Err(NidParseError::BadNetNum(_))));
        let e = "1.2.3@tcp".parse::<Nid>().unwrap_err().to_string();
        assert!(e.contains("1.2.3") && e.contains("IPv4"), "{e}");
    }

    #[test]
    fn process_ids() {
        let p: ProcessId = "12345-7@dma".parse().unwrap();
        assert_eq!(p.pid, 12345);
        assert_eq!(p.to_string(), "12345-7@dma");
        let u: ProcessId = "U77-10.0.0.1@tcp".parse().unwrap();
        assert_eq!(u.pid, 77 | ProcessId::PID_USERFLAG);
        assert_eq!(u.to_string(), "U77-10.0.0.1@tcp");
    }

    proptest! {
        #[test]
        fn text_round_trip(addr in any::<u32>(), num in any::<u16>(), which in 0usize..4) {
            let lnd = [LndType::SOCKLND, LndType::DMALND, LndType::O2IBLND, LndType::GNILND][which];
            let nid = Net::new(lnd, num).nid(addr);
            prop_assert_eq!(nid.to_string().parse::<Nid>().unwrap(), nid);
        }

        #[test]
        fn parse_never_panics(s in ".{0,24}") {
            let _ = s.parse::<Nid>();
            let _ = s.parse::<ProcessId>();
        }
    }
}

macro_rules! text_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
text_serde!(Nid);
text_serde!(Net);
text_serde!(ProcessId);
