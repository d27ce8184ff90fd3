//! Hand-made tar layers, byte by byte, so the tests can write what no well-behaved tool would
//! (`../` names, absolute names, links out of the tree, lies about sizes).

/// A tar stream being written.
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

/// One entry's header fields.
pub struct H<'a> {
    pub name: &'a [u8],
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
}

impl<'a> H<'a> {
    pub fn new(name: &'a [u8], kind: u8) -> Self {
        H {
            name,
            kind,
            mode: if kind == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size: 0,
            link: b"",
            dev: (0, 0),
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}", w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A ustar header block for `h` (names up to 100 bytes; longer ones go through pax).
pub fn header(h: &H<'_>) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = h.name.len().min(100);
    b[..n].copy_from_slice(&h.name[..n]);
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], u64::from(h.uid));
    octal(&mut b[116..124], u64::from(h.gid));
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], 1_700_000_000);
    b[156] = h.kind;
    let l = h.link.len().min(100);
    b[157..157 + l].copy_from_slice(&h.link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], u64::from(h.dev.0));
    octal(&mut b[337..345], u64::from(h.dev.1));
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

impl Tar {
    /// Appends a raw entry: header and `data` padded to 512 (the header's size may lie).
    pub fn raw(&mut self, h: &H<'_>, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&header(h));
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A pax extended header (`x`) with `records` (key, value) for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n" where len counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = H::new(b"PaxHeaders/x", b'x');
        h.size = body.len() as u64;
        self.raw(&h, &body)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = H::new(name.as_bytes(), b'5');
        h.mode = mode;
        self.raw(&h, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.file_owned(name, data, mode, 0, 0)
    }

    pub fn file_owned(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> &mut Self {
        let mut h = H::new(name.as_bytes(), b'0');
        h.mode = mode;
        h.uid = uid;
        h.gid = gid;
        h.size = data.len() as u64;
        self.raw(&h, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = H::new(name.as_bytes(), b'2');
        h.mode = 0o777;
        h.link = target.as_bytes();
        self.raw(&h, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = H::new(name.as_bytes(), b'1');
        h.link = target.as_bytes();
        self.raw(&h, b"")
    }

    pub fn node(&mut self, name: &str, kind: u8, dev: (u32, u32), mode: u32) -> &mut Self {
        let mut h = H::new(name.as_bytes(), kind);
        h.mode = mode;
        h.dev = dev;
        self.raw(&h, b"")
    }

    /// The end-of-archive blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}
