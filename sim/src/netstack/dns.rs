//! The DNS wire format the guest needs: an A query for one name, and the A record (or the
//! failure) out of the answer. Written against RFC 1035 directly; every read is bounds-checked
//! because the answer comes off the network.

use std::net::Ipv4Addr;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;

/// Why an answer gave no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AnswerError {
    /// Not an answer to our query (wrong id, not a response): ignore it and keep waiting.
    NotOurs,
    /// Malformed message.
    Malformed(&'static str),
    /// The name does not exist (NXDOMAIN) or has no A record.
    NotFound,
    /// The server answered with another error code.
    Rcode(u8),
}

/// Checks a name for the wire: dot-separated labels of 1..=63 bytes, at most 253 bytes in
/// all, an optional trailing dot.
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("name longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if !label.is_ascii() {
            return Err("non-ASCII label");
        }
    }
    Ok(())
}

/// A recursive A/IN query for `name` with transaction `id`. `name` must have passed
/// [`validate_name`].
pub(crate) fn build_query(id: u16, name: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(18 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&0x0100u16.to_be_bytes()); // standard query, recursion desired
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, no other records
    for label in name.strip_suffix('.').unwrap_or(name).split('.') {
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&TYPE_A.to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    msg
}

/// The first A/IN record in the answer to query `id`.
pub(crate) fn parse_answer(id: u16, msg: &[u8]) -> Result<Ipv4Addr, AnswerError> {
    let mut r = Reader { msg, pos: 0 };
    let got_id = r.u16()?;
    let flags = r.u16()?;
    if got_id != id || flags & 0x8000 == 0 {
        return Err(AnswerError::NotOurs);
    }
    let rcode = (flags & 0x000f) as u8;
    if rcode == RCODE_NXDOMAIN {
        return Err(AnswerError::NotFound);
    }
    if rcode != 0 {
        return Err(AnswerError::Rcode(rcode));
    }
    let questions = r.u16()?;
    let answers = r.u16()?;
    r.skip(4)?; // authority and additional counts
    for _ in 0..questions {
        r.skip_name()?;
        r.skip(4)?;
    }
    for _ in 0..answers {
        r.skip_name()?;
        let rtype = r.u16()?;
        let class = r.u16()?;
        r.skip(4)?; // ttl
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        if rtype == TYPE_A && class == CLASS_IN {
            let octets: [u8; 4] = data
                .try_into()
                .map_err(|_| AnswerError::Malformed("A record is not 4 bytes"))?;
            return Ok(Ipv4Addr::from(octets));
        }
    }
    Err(AnswerError::NotFound)
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AnswerError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.msg.len());
        let end = end.ok_or(AnswerError::Malformed("truncated message"))?;
        let out = &self.msg[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> Result<(), AnswerError> {
        self.take(n).map(|_| ())
    }

    fn u16(&mut self) -> Result<u16, AnswerError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Skips a possibly compressed name: labels up to the root, or up to a pointer (which
    /// ends the name in place; we never need to follow it).
    fn skip_name(&mut self) -> Result<(), AnswerError> {
        for _ in 0..128 {
            let len = self.take(1)?[0];
            match len {
                0 => return Ok(()),
                l if l & 0xc0 == 0xc0 => return self.skip(1),
                l if l & 0xc0 == 0 => self.skip(usize::from(l))?,
                _ => return Err(AnswerError::Malformed("reserved label type")),
            }
        }
        Err(AnswerError::Malformed("name with too many labels"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query` with the given rcode and A records, the name compressed to a
    /// pointer at the question as servers do.
    fn answer(query: &[u8], rcode: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
        let mut msg = query.to_vec();
        msg[2] = 0x81;
        msg[3] = 0x80 | rcode;
        msg[7] = addrs.len() as u8;
        for a in addrs {
            msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            msg.extend_from_slice(a);
        }
        msg
    }

    #[test]
    fn query_has_the_wire_layout() {
        let q = build_query(0x1234, "vm1.x.test.");
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03vm1\x01x\x04test\x00\x00\x01\x00\x01");
    }

    #[test]
    fn parses_the_first_a_record() {
        let q = build_query(7, "a.test");
        let a = answer(&q, 0, &[[10, 1, 2, 3], [10, 1, 2, 4]]);
        assert_eq!(parse_answer(7, &a), Ok(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn skips_other_record_types() {
        let q = build_query(7, "a.test");
        let mut a = answer(&q, 0, &[]);
        a[7] = 2;
        // A CNAME pointing at a label + pointer, then the A record.
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'b', 0xc0, 14]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9]);
        assert_eq!(parse_answer(7, &a), Ok(Ipv4Addr::new(192, 0, 2, 9)));
    }

    #[test]
    fn reports_failures() {
        let q = build_query(7, "a.test");
        assert_eq!(
            parse_answer(7, &answer(&q, 3, &[])),
            Err(AnswerError::NotFound)
        );
        assert_eq!(
            parse_answer(7, &answer(&q, 0, &[])),
            Err(AnswerError::NotFound)
        );
        assert_eq!(
            parse_answer(7, &answer(&q, 2, &[])),
            Err(AnswerError::Rcode(2))
        );
        assert_eq!(
            parse_answer(8, &answer(&q, 0, &[])),
            Err(AnswerError::NotOurs)
        );
        assert_eq!(parse_answer(7, &q), Err(AnswerError::NotOurs));
    }

    #[test]
    fn truncated_or_garbage_answers_do_not_panic() {
        let q = build_query(7, "a.test");
        let a = answer(&q, 0, &[[10, 1, 2, 3]]);
        for cut in 0..a.len() {
            assert!(parse_answer(7, &a[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = a.clone();
        bad[12] = 0x80; // reserved label type
        assert!(matches!(
            parse_answer(7, &bad),
            Err(AnswerError::Malformed(_))
        ));
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("x.test").is_ok());
        assert!(validate_name("x.test.").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            &"a".repeat(64),
            &"a.".repeat(128),
            "é.test",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
