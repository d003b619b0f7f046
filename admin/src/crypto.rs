//! Secrets: provider credentials sealed at rest, and the random tokens and
//! keys the service hands out (stored only as SHA-256 hashes).
//!
//! Credentials are sealed with ChaCha20-Poly1305 under a 256-bit data key
//! taken from `PORTCULLIS_DATA_KEY` (64 hex digits) or, failing that, from
//! `admin.key` in the data directory (created on first start, mode 0600).
//! The provider id is the associated data, so a sealed value copied to
//! another provider's row does not open.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The environment variable that may hold the data key.
pub const DATA_KEY_ENV: &str = "PORTCULLIS_DATA_KEY";

/// Seals and opens provider credentials.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// A sealer for a raw 32-byte key.
    pub fn new(key: [u8; 32]) -> anyhow::Result<Sealer> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| anyhow::anyhow!("bad data key"))?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// The data key from the environment, else from `dir/admin.key`
    /// (generated if missing).
    pub fn load(env_value: Option<String>, dir: &Path) -> anyhow::Result<Sealer> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Sealer::new(parse_key(&v).ok_or_else(|| {
                anyhow::anyhow!("{DATA_KEY_ENV} must be 64 hex digits (32 bytes)")
            })?);
        }
        let path = dir.join("admin.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Sealer::new(parse_key(&text).ok_or_else(|| {
                anyhow::anyhow!("{} does not hold 64 hex digits", path.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| anyhow::anyhow!("no randomness"))?;
                write_private(&path, &hex::encode(key))?;
                Sealer::new(key)
            }
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Encrypts `plain`, bound to `context` (the owning row's id).
    pub fn seal(&self, context: &str, plain: &[u8]) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    /// Decrypts what `seal` produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let mut raw = B64.decode(sealed)?;
        if raw.len() < NONCE_LEN {
            anyhow::bail!("sealed value too short");
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| anyhow::anyhow!("cannot open sealed value (wrong data key?)"))?;
        Ok(plain.to_vec())
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(contents.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}

/// A new secret with a readable prefix: `pc-` for proxy keys, `pat-` for
/// admin tokens, `gwt-` for gateway tokens. 160 random bits.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 20];
    // SystemRandom fails only without an OS entropy source; uuid v4 (also
    // OS randomness) is the fallback rather than a panic.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        let u = uuid::Uuid::new_v4();
        bytes[..16].copy_from_slice(u.as_bytes());
    }
    format!("{prefix}{}", hex::encode(bytes))
}

/// SHA-256 hex of a secret, as stored and as gateways compare it.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a secret shown in listings: enough to recognise it.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_is_bound_to_context() {
        let s = Sealer::new([7u8; 32]).unwrap();
        let sealed = s.seal("prv_a", b"sk-secret").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(s.open("prv_a", &sealed).unwrap(), b"sk-secret");
        assert!(s.open("prv_b", &sealed).is_err());
        let other = Sealer::new([8u8; 32]).unwrap();
        assert!(other.open("prv_a", &sealed).is_err());
        // Fresh nonce per seal.
        assert_ne!(sealed, s.seal("prv_a", b"sk-secret").unwrap());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("pc-admin-key-{}", uuid::Uuid::new_v4()));
        let a = Sealer::load(None, &dir).unwrap();
        let sealed = a.seal("x", b"v").unwrap();
        let b = Sealer::load(None, &dir).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"v");
        assert!(Sealer::load(Some("zz".into()), &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_hash_as_sha256_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let s = new_secret("pc-");
        assert_eq!(s.len(), 43);
        assert_eq!(display_prefix(&s).len(), 10);
    }
}
