//! sha256 content digests.

use crate::error::{Error, Result};
use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "sha256:";

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`.
///
/// Serialises as that string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    /// The whole text, `sha256:<hex>`.
    text: String,
}

fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`; any other algorithm or form is refused.
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::InvalidDigest(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidDigest(s.to_string()));
        }
        Ok(Digest {
            text: s.to_string(),
        })
    }

    /// Parse a bare 64-hex-digit sha256 value (as used in blob file names).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        Digest::parse(&format!("{PREFIX}{hex}"))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    /// A digest from a raw sha256 hash value.
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest {
            text: format!("{PREFIX}{}", hex_encode(&hash)),
        }
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.text[PREFIX.len()..]
    }

    /// The algorithm name; always `sha256`.
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The whole digest text, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first 12 hex digits, as `docker images` shows ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// Convert to oci-spec's digest type (for descriptors).
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // Cannot fail in practice: a valid sha256 digest is a valid OCI digest.
        oci_spec::image::Digest::from_str(&self.text).unwrap_or_else(|_| {
            unreachable!("a validated sha256 digest is always a valid OCI digest")
        })
    }

    /// Convert from oci-spec's digest type; only sha256 is accepted.
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest> {
        Digest::parse(d.as_ref())
    }

    /// The digest of a descriptor; only sha256 is accepted.
    pub fn of_descriptor(desc: &oci_spec::image::Descriptor) -> Result<Digest> {
        Digest::from_oci(desc.digest())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        d.to_oci()
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        d.to_oci()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest> {
        Digest::from_oci(d)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: sha2::Sha256,
}

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Hasher {
            inner: sha2::Sha256::new(),
        }
    }

    /// Hash more bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.inner.update(b);
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> Digest {
        let out = self.inner.finalize();
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&out);
        Digest::from_sha256(hash)
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::of(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let mut h = Hasher::new();
        h.update(b"{");
        h.update(b"}");
        assert_eq!(h.finish(), Digest::of(b"{}"));
    }

    #[test]
    fn parse_and_serde() {
        let s = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let d: Digest = s.parse().expect("valid");
        assert_eq!(d.hex(), &s[7..]);
        assert_eq!(d.short(), "44136fa355b3");
        let j = serde_json::to_string(&d).expect("ser");
        assert_eq!(j, format!("\"{s}\""));
        let back: Digest = serde_json::from_str(&j).expect("de");
        assert_eq!(back, d);
        assert_eq!(Digest::from_oci(&d.to_oci()).expect("oci"), d);
        for bad in [
            "",
            "sha256:",
            "sha512:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8",
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(Error::InvalidDigest(_))),
                "{bad}"
            );
        }
    }
}
