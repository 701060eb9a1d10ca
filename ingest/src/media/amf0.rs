//! AMF0 values (the encoding of RTMP commands and FLV script data), bounded: at most
//! [`MAX_DEPTH`] levels of nesting and [`MAX_ITEMS`] values per message, so that a
//! hostile message costs no more than its length.

use super::{ByteReader, Truncated};

pub const MAX_DEPTH: usize = 16;
pub const MAX_ITEMS: usize = 4_096;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0 {
    Number(f64),
    Bool(bool),
    String(String),
    Object(Vec<(String, Amf0)>),
    Null,
    Undefined,
    Array(Vec<Amf0>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Amf0Error {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("AMF0 type marker {0:#04x} is not supported")]
    Marker(u8),
    #[error("AMF0 nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF0 message with more than {MAX_ITEMS} values")]
    TooMany,
}

impl Amf0 {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object (or ECMA array).
    pub fn get(&self, key: &str) -> Option<&Amf0> {
        match self {
            Amf0::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Amf0::Number(n) => {
                out.push(0x00);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf0::Bool(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
            Amf0::String(s) => {
                out.push(0x02);
                encode_utf8(s, out);
            }
            Amf0::Object(props) => {
                out.push(0x03);
                for (k, v) in props {
                    encode_utf8(k, out);
                    v.encode(out);
                }
                out.extend_from_slice(&[0, 0, 0x09]);
            }
            Amf0::Null => out.push(0x05),
            Amf0::Undefined => out.push(0x06),
            Amf0::Array(items) => {
                out.push(0x0a);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// A short string: at most 65,535 bytes, cut at a character boundary.
fn encode_utf8(s: &str, out: &mut Vec<u8>) {
    let mut end = s.len().min(0xffff);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &s.as_bytes()[..end];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Decodes every value in `buf` (a command: name, transaction id, arguments...).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0>, Amf0Error> {
    let mut r = ByteReader::new(buf, "AMF0");
    let mut items = 0;
    let mut out = Vec::new();
    while r.remaining() > 0 {
        out.push(decode_value(&mut r, 0, &mut items)?);
    }
    Ok(out)
}

fn decode_value(r: &mut ByteReader<'_>, depth: usize, items: &mut usize) -> Result<Amf0, Amf0Error> {
    if depth > MAX_DEPTH {
        return Err(Amf0Error::TooDeep);
    }
    *items += 1;
    if *items > MAX_ITEMS {
        return Err(Amf0Error::TooMany);
    }
    let marker = r.u8()?;
    Ok(match marker {
        0x00 => Amf0::Number(f64::from_be_bytes(r.take(8)?.try_into().map_err(|_| Amf0Error::Marker(marker))?)),
        0x01 => Amf0::Bool(r.u8()? != 0),
        0x02 => {
            let len = usize::from(r.u16()?);
            Amf0::String(String::from_utf8_lossy(r.take(len)?).into_owned())
        }
        0x03 => Amf0::Object(decode_props(r, depth, items)?),
        0x05 => Amf0::Null,
        0x06 => Amf0::Undefined,
        0x08 => {
            r.u32()?; // ECMA array count: advisory, the end marker decides
            Amf0::Object(decode_props(r, depth, items)?)
        }
        0x0a => {
            let n = r.u32()? as usize;
            let mut v = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                v.push(decode_value(r, depth + 1, items)?);
            }
            Amf0::Array(v)
        }
        0x0b => {
            r.take(10)?; // date: f64 ms + i16 time zone
            Amf0::Undefined
        }
        0x0c => {
            let len = r.u32()? as usize;
            Amf0::String(String::from_utf8_lossy(r.take(len)?).into_owned())
        }
        other => return Err(Amf0Error::Marker(other)),
    })
}

fn decode_props(r: &mut ByteReader<'_>, depth: usize, items: &mut usize) -> Result<Vec<(String, Amf0)>, Amf0Error> {
    let mut props = Vec::new();
    loop {
        let len = usize::from(r.u16()?);
        if len == 0 && r.rest().first() == Some(&0x09) {
            r.u8()?;
            return Ok(props);
        }
        let key = String::from_utf8_lossy(r.take(len)?).into_owned();
        let value = decode_value(r, depth + 1, items)?;
        props.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let v = vec![
            Amf0::String("onStatus".into()),
            Amf0::Number(0.0),
            Amf0::Null,
            Amf0::Object(vec![
                ("level".into(), Amf0::String("error".into())),
                ("nested".into(), Amf0::Array(vec![Amf0::Bool(true), Amf0::Undefined])),
            ]),
        ];
        let mut buf = Vec::new();
        for x in &v {
            x.encode(&mut buf);
        }
        assert_eq!(decode_all(&buf), Ok(v));
        assert!(matches!(decode_all(&buf[..buf.len() - 1]), Err(Amf0Error::Truncated(_))));
        // 100 nested objects: refused, not a stack overflow.
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        assert_eq!(decode_all(&deep), Err(Amf0Error::TooDeep));
        // A strict array claiming 4 billion items: refused at the item limit or the end.
        assert!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
