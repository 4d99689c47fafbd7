//! git's pkt-line framing (gitprotocol-common): four hex digits of length, then the data;
//! `0000` ends a message (flush), `0001` separates its sections (delim), `0002` ends a
//! stateless response (response-end).

use std::io::{self, Read};

/// The largest pkt-line, header included.
pub const MAX_LEN: usize = 65520;

/// One pkt-line as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A line of data (a text line keeps its `\n`).
    Data(Vec<u8>),
    /// `0000`.
    Flush,
    /// `0001`.
    Delim,
    /// `0002`.
    ResponseEnd,
}

impl Packet {
    /// The data of a text line without its final newline, or `None` for a special packet.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Packet::Data(d) => Some(d.strip_suffix(b"\n").unwrap_or(d)),
            _ => None,
        }
    }
}

/// Appends `data` as one pkt-line to `out` (split across several when longer than allowed).
pub fn data(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(MAX_LEN - 4) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Appends a text line (`line` and a newline) as one pkt-line.
pub fn line(out: &mut Vec<u8>, line: &str) {
    let mut d = Vec::with_capacity(line.len() + 1);
    d.extend_from_slice(line.as_bytes());
    d.push(b'\n');
    data(out, &d);
}

/// Appends a flush packet.
pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

/// Appends a delimiter packet.
pub fn delim(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

/// Reads one pkt-line; `Ok(None)` at a clean end of the stream (before a header).
pub fn read(r: &mut impl Read) -> io::Result<Option<Packet>> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let text = std::str::from_utf8(&head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a pkt-line header is not hex"))?;
    let len = usize::from_str_radix(text, 16).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad pkt-line header `{}`", text.escape_default()),
        )
    })?;
    match len {
        0 => Ok(Some(Packet::Flush)),
        1 => Ok(Some(Packet::Delim)),
        2 => Ok(Some(Packet::ResponseEnd)),
        3 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "pkt-line of length 3",
        )),
        n if n > MAX_LEN => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pkt-line of length {n}"),
        )),
        n => {
            let mut d = vec![0u8; n - 4];
            r.read_exact(&mut d)?;
            Ok(Some(Packet::Data(d)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_every_kind() {
        let mut out = Vec::new();
        line(&mut out, "command=ls-refs");
        delim(&mut out);
        data(&mut out, b"\x01pack");
        flush(&mut out);
        out.extend_from_slice(b"0002");
        assert!(out.starts_with(b"0014command=ls-refs\n0001"));
        let mut r = &out[..];
        assert_eq!(
            read(&mut r).expect("read"),
            Some(Packet::Data(b"command=ls-refs\n".to_vec()))
        );
        assert_eq!(read(&mut r).expect("read"), Some(Packet::Delim));
        let d = read(&mut r).expect("read").expect("packet");
        assert_eq!(d, Packet::Data(b"\x01pack".to_vec()));
        assert_eq!(read(&mut r).expect("read"), Some(Packet::Flush));
        assert_eq!(read(&mut r).expect("read"), Some(Packet::ResponseEnd));
        assert_eq!(read(&mut r).expect("read"), None);
        assert_eq!(
            Packet::Data(b"version 2\n".to_vec()).text(),
            Some(&b"version 2"[..])
        );
    }

    #[test]
    fn refuses_garbage_and_half_packets() {
        assert!(read(&mut &b"zzzz"[..]).is_err());
        assert!(read(&mut &b"0003"[..]).is_err());
        assert!(read(&mut &b"ffff"[..]).is_err());
        assert!(read(&mut &b"000ahel"[..]).is_err());
        assert!(read(&mut &b"00"[..]).is_err());
        let long = vec![b'x'; MAX_LEN * 2];
        let mut out = Vec::new();
        data(&mut out, &long);
        let mut r = &out[..];
        let mut back = Vec::new();
        while let Some(Packet::Data(d)) = read(&mut r).expect("read") {
            back.extend(d);
        }
        assert_eq!(back, long);
    }
}
