//! Typed identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ID_LEN: usize = 8;
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A sandbox identifier: eight lowercase ASCII letters or digits, such as `abc12345`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId([u8; ID_LEN]);

/// Why a string is not a valid sandbox id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox id {value:?}: expected 8 lowercase letters or digits")]
pub struct InvalidSandboxId {
    pub value: String,
}

impl SandboxId {
    /// A fresh random id drawn from the operating system's random source.
    pub fn random() -> Self {
        let mut raw = [0u8; ID_LEN];
        let mut out = [0u8; ID_LEN];
        // 256 is not a multiple of 36; reject bytes >= 252 to keep every
        // character equally likely.
        let mut filled = 0;
        while filled < ID_LEN {
            getrandom::fill(&mut raw).expect("the operating system's random source failed");
            for byte in raw {
                if byte < 252 && filled < ID_LEN {
                    out[filled] = ID_ALPHABET[usize::from(byte % 36)];
                    filled += 1;
                }
            }
        }
        Self(out)
    }

    pub fn as_str(&self) -> &str {
        // The constructor only admits ASCII bytes.
        std::str::from_utf8(&self.0).expect("sandbox ids are ASCII")
    }
}

/// A random secret: 32 bytes from the operating system, as 64 hex digits.
pub fn random_token() -> String {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the operating system's random source failed");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl FromStr for SandboxId {
    type Err = InvalidSandboxId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let valid = bytes.len() == ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(InvalidSandboxId {
                value: s.chars().take(64).collect(),
            });
        }
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SandboxId({})", self.as_str())
    }
}

impl Serialize for SandboxId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SandboxId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = SandboxId::random();
        let b = SandboxId::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<SandboxId>().unwrap(), a);
        assert_eq!(a.as_str().len(), 8);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "abc",
            "ABC12345",
            "abc1234!",
            "abc123456",
            "../../..",
            "abc 1234",
        ] {
            let err = bad.parse::<SandboxId>().unwrap_err();
            assert!(
                err.to_string().contains("invalid sandbox id"),
                "{bad}: {err}"
            );
        }
        assert!("abc12345".parse::<SandboxId>().is_ok());
    }
}
