//! Bencoding (BEP 3), the BitTorrent tracker's response format: an encoder for the
//! dictionaries the tracker writes, and a bounded decoder for its clients (seeders,
//! viewers) and tests.

/// Writes a bencoded dictionary. Keys must be added in sorted (raw byte) order, as
/// BEP 3 requires; `debug_assert`s check it.
#[derive(Debug, Default)]
pub struct DictWriter {
    out: Vec<u8>,
    last_key: Vec<u8>,
}

impl DictWriter {
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(256);
        out.push(b'd');
        DictWriter { out, last_key: Vec::new() }
    }

    fn key(&mut self, k: &str) {
        debug_assert!(self.last_key.as_slice() < k.as_bytes(), "bencode keys out of order: {k}");
        self.last_key.clear();
        self.last_key.extend_from_slice(k.as_bytes());
        write_bytes(&mut self.out, k.as_bytes());
    }

    pub fn int(mut self, k: &str, v: i64) -> Self {
        self.key(k);
        write_int(&mut self.out, v);
        self
    }

    pub fn bytes(mut self, k: &str, v: &[u8]) -> Self {
        self.key(k);
        write_bytes(&mut self.out, v);
        self
    }

    /// A value already bencoded (a nested dictionary or list).
    pub fn raw(mut self, k: &str, bencoded: &[u8]) -> Self {
        self.key(k);
        self.out.extend_from_slice(bencoded);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'e');
        self.out
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: how raw bytes
/// (info-hashes, peer ids, tokens) travel in an announce's query.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Raw bytes as a WebTorrent tracker's JSON carries them (info-hashes, peer ids): a
/// "binary string", one character (U+0000–U+00FF) per byte.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

pub fn write_int(out: &mut Vec<u8>, v: i64) {
    out.push(b'i');
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b'e');
}

pub fn write_bytes(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(v.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(v);
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bencode: {0} at byte {1}")]
pub struct DecodeError(&'static str, usize);

/// Nesting deeper than this is refused (a hostile input can't exhaust the stack).
const MAX_DEPTH: usize = 32;

/// Decodes one value that must span the whole input.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut pos = 0;
    let v = value(input, &mut pos, 0)?;
    if pos != input.len() {
        return Err(DecodeError("trailing bytes", pos));
    }
    Ok(v)
}

fn value(b: &[u8], pos: &mut usize, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError("nested too deep", *pos));
    }
    match b.get(*pos) {
        Some(b'i') => {
            *pos += 1;
            let end = find(b, *pos, b'e')?;
            let s = std::str::from_utf8(&b[*pos..end]).map_err(|_| DecodeError("bad integer", *pos))?;
            let v = s.parse().map_err(|_| DecodeError("bad integer", *pos))?;
            *pos = end + 1;
            Ok(Value::Int(v))
        }
        Some(b'l') => {
            *pos += 1;
            let mut items = Vec::new();
            while b.get(*pos) != Some(&b'e') {
                items.push(value(b, pos, depth + 1)?);
            }
            *pos += 1;
            Ok(Value::List(items))
        }
        Some(b'd') => {
            *pos += 1;
            let mut items = Vec::new();
            while b.get(*pos) != Some(&b'e') {
                if !b.get(*pos).is_some_and(u8::is_ascii_digit) {
                    return Err(DecodeError("dictionary key is not a string", *pos));
                }
                let k = string(b, pos)?;
                items.push((k, value(b, pos, depth + 1)?));
            }
            *pos += 1;
            Ok(Value::Dict(items))
        }
        Some(b'0'..=b'9') => string(b, pos).map(Value::Bytes),
        Some(_) => Err(DecodeError("unexpected byte", *pos)),
        None => Err(DecodeError("truncated", *pos)),
    }
}

fn string(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, DecodeError> {
    let colon = find(b, *pos, b':')?;
    let len: usize = std::str::from_utf8(&b[*pos..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError("bad string length", *pos))?;
    let start = colon + 1;
    let end = start.checked_add(len).filter(|&e| e <= b.len()).ok_or(DecodeError("truncated string", start))?;
    *pos = end;
    Ok(b[start..end].to_vec())
}

fn find(b: &[u8], from: usize, byte: u8) -> Result<usize, DecodeError> {
    b.get(from..)
        .and_then(|rest| rest.iter().position(|&c| c == byte))
        .map(|i| from + i)
        .ok_or(DecodeError("truncated", from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_sorted_dictionaries() {
        let d = DictWriter::new().int("interval", 60).bytes("peers", b"\x7f\0\0\x01\x1a\xe1").finish();
        assert_eq!(d, b"d8:intervali60e5:peers6:\x7f\0\0\x01\x1a\xe1e");
        let v = decode(&d).unwrap();
        assert_eq!(v.get("interval").and_then(Value::as_int), Some(60));
        assert_eq!(v.get("peers").and_then(Value::as_bytes), Some(&b"\x7f\0\0\x01\x1a\xe1"[..]));
    }

    #[test]
    fn refuses_truncated_and_deep_input() {
        assert!(decode(b"d8:interval").is_err());
        assert!(decode(b"5:ab").is_err());
        assert!(decode(b"i12").is_err());
        assert!(decode(&[b'l'; 100]).is_err());
        assert!(decode(b"di1ei2ee").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
