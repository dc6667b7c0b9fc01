//! The real `dig`, with its output parsed into sections.

use std::process::Command;

use crate::require_program;

/// One resource record line of dig's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigRecord {
    /// Owner name as printed.
    pub name: String,
    /// TTL.
    pub ttl: u32,
    /// Type mnemonic.
    pub rtype: String,
    /// The data as dig prints it.
    pub data: String,
}

/// A parsed dig response.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, … (empty when there was no reply).
    pub status: String,
    /// Header flags (`qr`, `aa`, `tc`, …).
    pub flags: Vec<String>,
    /// Question name as printed (case preserved).
    pub question: String,
    /// Answer section.
    pub answer: Vec<DigRecord>,
    /// Authority section.
    pub authority: Vec<DigRecord>,
    /// Additional section (without the OPT pseudo-record).
    pub additional: Vec<DigRecord>,
    /// EDNS UDP size the server advertised, if it sent OPT.
    pub edns_udp: Option<u16>,
    /// The whole output, for assertion messages.
    pub raw: String,
}

impl Dig {
    /// Whether a header flag is set.
    pub fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// Sorted data of the answer records of type `rtype`.
    pub fn answers(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }
}

/// Runs `dig @server -p port <args> +norec +time=2 +tries=1` and parses the output.
pub fn dig(server: &str, port: u16, args: &[&str]) -> Dig {
    require_program("dig", "bind9-dnsutils");
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .arg("-p")
        .arg(port.to_string())
        .args(["+norec", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn parse(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_owned(),
        ..Dig::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split_once("status: ") {
            d.status = rest.1.split(',').next().unwrap_or("").trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if let Some(rest) = line.strip_prefix("; EDNS: ") {
            d.edns_udp = rest
                .rsplit("udp: ")
                .next()
                .and_then(|v| v.trim().parse().ok());
        } else if line.starts_with(";; QUESTION SECTION:") {
            section = "question";
        } else if line.starts_with(";; ANSWER SECTION:") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION:") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION:") {
            section = "additional";
        } else if line.trim().is_empty() {
            section = "";
        } else if section == "question" {
            d.question = line
                .trim_start_matches(';')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
        } else if !section.is_empty() && !line.starts_with(';') {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(ttl), Some(_class), Some(rtype)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rec = DigRecord {
                name: name.to_owned(),
                ttl: ttl.parse().unwrap_or(0),
                rtype: rtype.to_owned(),
                data: parts.collect::<Vec<_>>().join(" "),
            };
            match section {
                "answer" => d.answer.push(rec),
                "authority" => d.authority.push(rec),
                _ => d.additional.push(rec),
            }
        }
    }
    d
}
