//! `pg_basebackup -Ft -D -`: the tar stream of one tablespace, whose first member is the
//! `backup_label` the server wrote for it. Its facts (where WAL replay starts, on which
//! timeline, when) are read from the head of the stream before the stream is stored, so the
//! snapshot records them; the bytes read are handed on unchanged.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use crate::error::{Error, Result};

/// How far into the stream `backup_label` must be found.
const LABEL_WITHIN: usize = 1 << 20;

/// The stream, whole again, and the facts of its `backup_label` (`pg_basebackup.start_lsn`,
/// `.start_wal_file`, `.timeline`, `.checkpoint_lsn`, `.start_time`, `.label`).
pub struct Labelled {
    /// The facts.
    pub facts: BTreeMap<String, String>,
    /// The whole stream from its first byte.
    pub reader: Box<dyn Read + Send>,
}

/// Reads the head of `r` until its `backup_label` member is whole and parses it. A stream that
/// ends, fails or holds no `backup_label` in its first MiB is an error: a base backup whose WAL
/// start is unknown cannot be recovered from, nor can retention tell which WAL it needs.
pub fn read_label(mut r: Box<dyn Read + Send>, what: &str) -> Result<Labelled> {
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if let Some(text) = label_in(&head) {
            let facts = parse_label(&text).map_err(|e| Error::Invalid(format!("{what}: backup_label: {e}")))?;
            return Ok(Labelled { facts, reader: Box::new(Cursor::new(head).chain(r)) });
        }
        if head.len() >= LABEL_WITHIN {
            return Err(Error::Invalid(format!("{what}: no backup_label in the first MiB of the tar stream")));
        }
        let n = r.read(&mut buf).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        if n == 0 {
            return Err(Error::Invalid(format!(
                "{what}: the tar stream ended after {} bytes without a backup_label",
                head.len()
            )));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The content of `backup_label` if `head` holds that member whole.
fn label_in(head: &[u8]) -> Option<String> {
    let mut a = tar::Archive::new(Cursor::new(head));
    for e in a.entries().ok()? {
        let mut e = e.ok()?;
        let is_label = e.path().ok()?.as_os_str() == "backup_label";
        if is_label {
            let mut s = String::new();
            e.read_to_string(&mut s).ok()?;
            return (s.len() as u64 == e.size()).then_some(s);
        }
    }
    None
}

/// The facts of a `backup_label` (PostgreSQL's `do_pg_backup_start` writes it):
/// `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` and the lines after it.
pub fn parse_label(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut f = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else { continue };
        match k {
            "START WAL LOCATION" => {
                let (lsn, file) = v
                    .split_once(" (file ")
                    .and_then(|(l, f)| Some((l, f.strip_suffix(')')?)))
                    .ok_or_else(|| format!("START WAL LOCATION {v:?} is not `LSN (file NAME)`"))?;
                if file.len() != 24 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("START WAL LOCATION names {file:?}, not a WAL segment"));
                }
                f.insert("pg_basebackup.start_lsn".into(), lsn.to_string());
                f.insert("pg_basebackup.start_wal_file".into(), file.to_string());
            }
            "CHECKPOINT LOCATION" => {
                f.insert("pg_basebackup.checkpoint_lsn".into(), v.to_string());
            }
            "START TIME" => {
                f.insert("pg_basebackup.start_time".into(), v.to_string());
            }
            "START TIMELINE" => {
                f.insert("pg_basebackup.timeline".into(), v.to_string());
            }
            "LABEL" => {
                f.insert("pg_basebackup.label".into(), v.to_string());
            }
            _ => {}
        }
    }
    if !f.contains_key("pg_basebackup.start_wal_file") {
        return Err("no START WAL LOCATION line".into());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
        START TIME: 2026-12-02 15:40:00 UTC\nLABEL: cairn\nSTART TIMELINE: 1\n";

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_label_is_read_and_the_stream_handed_on_whole() {
        let big = vec![7u8; 300_000];
        let t = tar_of(&[("backup_label", LABEL.as_bytes()), ("base/1/1234", &big)]);
        // One byte at a time: the label is found whatever the reads return.
        struct Slow(Cursor<Vec<u8>>);
        impl Read for Slow {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = b.len().min(1000);
                self.0.read(&mut b[..n])
            }
        }
        let l = read_label(Box::new(Slow(Cursor::new(t.clone()))), "pg_basebackup").unwrap();
        assert_eq!(l.facts["pg_basebackup.start_wal_file"], "000000010000000000000002");
        assert_eq!(l.facts["pg_basebackup.start_lsn"], "0/2000028");
        assert_eq!(l.facts["pg_basebackup.timeline"], "1");
        let mut all = Vec::new();
        let mut r = l.reader;
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, t);
    }

    #[test]
    fn a_stream_without_a_usable_label_is_refused() {
        let t = tar_of(&[("PG_VERSION", b"15\n")]);
        let e = read_label(Box::new(Cursor::new(t)), "pg_basebackup").err().unwrap().to_string();
        assert!(e.contains("without a backup_label"), "{e}");
        let t = tar_of(&[("backup_label", b"START WAL LOCATION: nonsense\n")]);
        let e = read_label(Box::new(Cursor::new(t)), "pg_basebackup").err().unwrap().to_string();
        assert!(e.contains("START WAL LOCATION"), "{e}");
    }
}
