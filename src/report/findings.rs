//! What a check finds, as data: a kind, a severity and a location. The
//! text and JSON renderings are derived from it.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth saying, but the kernel accepts it as it is (a hint array of
    /// another length than the cache, say): never fails a check.
    Note,
    /// Safe for the data (leaks, stale counters); `--ignore-non-fatal-errors`
    /// accepts them.
    NonFatal,
    /// The metadata cannot be trusted.
    Fatal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub tree: Option<String>,
    pub device: Option<u64>,
    pub block: Option<u64>,
    /// A key range, as `[a..b]`.
    pub keys: Option<String>,
    /// A block range (space-map findings): [begin, end).
    pub blocks: Option<(u64, u64)>,
    /// The reference tools' encoded node path.
    pub node_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable machine-readable name, e.g. `node_damage`, `leaked_blocks`.
    pub kind: &'static str,
    pub message: String,
    pub location: Location,
    /// The long form printed with `-v`: the reference tools' wording
    /// with its encoded node path.
    pub detail: Option<String>,
}

impl Finding {
    pub fn fatal(kind: &'static str, message: String) -> Finding {
        Finding {
            severity: Severity::Fatal,
            kind,
            message,
            location: Location::default(),
            detail: None,
        }
    }

    pub fn non_fatal(kind: &'static str, message: String) -> Finding {
        Finding {
            severity: Severity::NonFatal,
            kind,
            message,
            location: Location::default(),
            detail: None,
        }
    }

    pub fn at(mut self, location: Location) -> Finding {
        self.location = location;
        self
    }

    pub fn with_detail(mut self, detail: String) -> Finding {
        self.detail = Some(detail);
        self
    }

    pub fn note(kind: &'static str, message: String) -> Finding {
        Finding {
            severity: Severity::Note,
            kind,
            message,
            location: Location::default(),
            detail: None,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    pub fn is_non_fatal(&self) -> bool {
        self.severity == Severity::NonFatal
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Finding {
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        s.push_str("\"severity\":");
        json_str(
            &mut s,
            match self.severity {
                Severity::Fatal => "fatal",
                Severity::NonFatal => "non-fatal",
                Severity::Note => "note",
            },
        );
        s.push_str(",\"kind\":");
        json_str(&mut s, self.kind);
        s.push_str(",\"message\":");
        json_str(&mut s, &self.message);
        let l = &self.location;
        if let Some(t) = &l.tree {
            s.push_str(",\"tree\":");
            json_str(&mut s, t);
        }
        if let Some(d) = l.device {
            let _ = write!(s, ",\"device\":{d}");
        }
        if let Some(b) = l.block {
            let _ = write!(s, ",\"block\":{b}");
        }
        if let Some(k) = &l.keys {
            s.push_str(",\"keys\":");
            json_str(&mut s, k);
        }
        if let Some((b, e)) = l.blocks {
            let _ = write!(s, ",\"blocks\":{{\"begin\":{b},\"end\":{e}}}");
        }
        if let Some(p) = &l.node_path {
            s.push_str(",\"node_path\":");
            json_str(&mut s, p);
        }
        s.push('}');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_names_location() {
        let f = Finding::fatal("node_damage", "bad \"node\"".into()).at(Location {
            block: Some(7),
            blocks: Some((1, 3)),
            ..Default::default()
        });
        assert_eq!(
            f.to_json(),
            r#"{"severity":"fatal","kind":"node_damage","message":"bad \"node\"","block":7,"blocks":{"begin":1,"end":3}}"#
        );
    }
}
