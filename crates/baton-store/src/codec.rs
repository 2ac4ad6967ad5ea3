//! The value frame: `crc32(payload) ++ payload`, payload in JSON.
//!
//! Decoding returns the *detail* of what is wrong as a plain string; the caller knows which
//! value it was reading and turns it into a [`crate::StoreError::Corrupt`] (a value read
//! from this node's disk) or a [`crate::StoreError::BadSnapshot`] (bytes received).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// Length of the checksum in front of every payload.
pub(crate) const CHECKSUM_BYTES: usize = 4;

/// `crc32(payload)` big-endian, then `payload`.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(CHECKSUM_BYTES + payload.len());
    value.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// Encode `v` as JSON and frame it.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    let payload = serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })?;
    Ok(frame(&payload))
}

/// Check the frame and return the payload.
pub(crate) fn unframe(value: &[u8]) -> Result<&[u8], String> {
    if value.len() < CHECKSUM_BYTES {
        return Err(format!(
            "the value is {} byte(s), shorter than its {CHECKSUM_BYTES}-byte checksum (truncated)",
            value.len()
        ));
    }
    let (sum, payload) = value.split_at(CHECKSUM_BYTES);
    let stored = u32::from_be_bytes(sum.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x} over {} byte(s))",
            payload.len()
        ));
    }
    Ok(payload)
}

/// Check the frame and decode the JSON payload.
pub(crate) fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    let payload = unframe(value)?;
    serde_json::from_slice(payload).map_err(|e| format!("the payload does not decode: {e}"))
}

/// The 8-byte big-endian key of log index `index`.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index a key encodes, or what is wrong with the key.
pub(crate) fn log_index(key: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| format!("the key is {} byte(s), not an 8-byte log index", key.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Printable form of a key for messages: UTF-8 text if it is, hex otherwise.
pub(crate) fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => format!("`{s}`"),
        _ => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}
