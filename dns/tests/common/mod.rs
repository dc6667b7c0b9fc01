//! What the dns crate's end-to-end tests share: [`Dns`], the real `fedplane-dns` binary on
//! loopback serving `example.com.` from real etcd (started through [`DnsOptions`]), the
//! hello-world records most tests serve, and hand-built DNS messages over UDP and TCP.
//!
//! Each test binary includes this module with `mod common;`.

// Every test binary compiles its own copy of this module and uses only part of it; what one
// binary leaves unused is not dead for the others.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use fedplane_testkit::{Daemon, Dig, Etcd, dig, free_port, http_get, wait_until};

/// How long a test waits for readiness or an answer unless it says otherwise.
pub const WAIT: Duration = Duration::from_secs(10);

/// The etcd prefix of hello-world's three A records.
pub const HW: &str = "/skydns/com/example/svc/federation/default/hello-world";
/// The name of hello-world's records.
pub const HW_NAME: &str = "hello-world.default.federation.svc.example.com";

/// QTYPE A.
pub const A: u16 = 1;
/// QTYPE SRV.
pub const SRV: u16 = 33;
/// QCLASS IN.
pub const IN: u16 = 1;
/// The RD (recursion desired) header flag.
pub const RD: u16 = 0x0100;

/// Puts hello-world's three A records (TTL 30).
pub fn hello_world(etcd: &Etcd) {
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.68","ttl":30}"#);
    etcd.put(&format!("{HW}/usa"), r#"{"host":"10.210.3.65","ttl":30}"#);
    etcd.put(&format!("{HW}/chn"), r#"{"host":"10.210.2.65","ttl":30}"#);
}

/// A fedplane-dns process serving example.com. (and any other zones it was given) on loopback.
pub struct Dns {
    pub daemon: Daemon,
    /// The DNS port (UDP and TCP) on 127.0.0.1.
    pub port: u16,
    /// The address of the HTTP endpoints (`/readyz`, `/metrics`, …).
    pub http: String,
}

/// How to start a [`Dns`]: `--zone example.com.`, then the options set here, in this order:
/// more zones, `--workers`, `--listen`, `--http`, `--etcd-endpoints`, the extra arguments.
#[must_use]
pub struct DnsOptions {
    zones: Vec<String>,
    workers: Option<u32>,
    endpoints: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
}

impl DnsOptions {
    /// Serves `zone` too.
    pub fn zone(mut self, zone: &str) -> Self {
        self.zones.push(zone.into());
        self
    }

    /// `--workers n` (the default: the server's own).
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = Some(n);
        self
    }

    /// Reads etcd at `endpoints` (comma-separated) instead.
    pub fn endpoints(mut self, endpoints: &str) -> Self {
        self.endpoints = endpoints.into();
        self
    }

    /// Passes `args` after the others.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(ToString::to_string));
        self
    }

    /// Sets environment variable `key` (beside `RUST_LOG=info`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the server through `wrapper` (a program and its arguments, e.g. `prlimit`).
    pub fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(ToString::to_string).collect();
        self
    }

    /// Starts the server and waits until it is ready (`/readyz`), within [`WAIT`].
    pub fn start(self) -> Dns {
        self.start_within(WAIT)
    }

    /// Starts the server and waits until it is ready, within `timeout`.
    pub fn start_within(self, timeout: Duration) -> Dns {
        let dns = self.start_unready();
        dns.await_ready(timeout);
        dns
    }

    /// Starts the server without waiting for it.
    pub fn start_unready(self) -> Dns {
        let port = free_port();
        let http = format!("127.0.0.1:{}", free_port());
        let bin = env!("CARGO_BIN_EXE_fedplane-dns");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.env("RUST_LOG", "info").envs(self.env);
        for zone in &self.zones {
            cmd.args(["--zone", zone]);
        }
        if let Some(n) = self.workers {
            cmd.args(["--workers", &n.to_string()]);
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--http", &http, "--etcd-endpoints", &self.endpoints])
            .args(self.args);
        let daemon = Daemon::spawn("fedplane-dns", cmd);
        Dns { daemon, port, http }
    }
}

impl Dns {
    /// Options for a server reading `etcd`.
    pub fn on(etcd: &Etcd) -> DnsOptions {
        Self::on_endpoints(&etcd.endpoint())
    }

    /// Options for a server reading etcd at `endpoints` (comma-separated).
    pub fn on_endpoints(endpoints: &str) -> DnsOptions {
        DnsOptions {
            zones: vec!["example.com.".into()],
            workers: None,
            endpoints: endpoints.into(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Waits (within `timeout`) until `/readyz` answers 200.
    pub fn await_ready(&self, timeout: Duration) {
        wait_until(timeout, "fedplane-dns /readyz", || {
            http_get(&self.http, "/readyz").filter(|(c, _)| *c == 200)
        });
    }

    /// Its DNS address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A TCP connection to it whose reads time out after [`WAIT`].
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s
    }

    /// Waits (within [`WAIT`]) until its log contains `text`.
    pub fn await_log(&self, text: &str) {
        wait_until(WAIT, &format!("{text:?} in the log"), || {
            self.daemon.output().contains(text).then_some(())
        });
    }

    /// Asks it with dig.
    pub fn q(&self, args: &[&str]) -> Dig {
        dig("127.0.0.1", self.port, args)
    }

    /// The sum of the samples whose line starts with `name` and contains `labels` (`""`: any);
    /// `None` when there is no such sample.
    pub fn try_metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, body) = http_get(&self.http, "/metrics").expect("metrics answer");
        let values: Vec<f64> = body
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// [`Self::try_metric`], 0 when there is no such sample.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.try_metric(name, labels).unwrap_or(0.0)
    }

    /// Waits until `name TYPE` answers `want` (sorted data), within [`WAIT`].
    pub fn await_answer(&self, name: &str, rtype: &str, want: &[&str]) -> Dig {
        self.await_answer_within(name, rtype, want, WAIT)
    }

    /// Waits until `name TYPE` answers `want` (sorted data), within `timeout`.
    pub fn await_answer_within(
        &self,
        name: &str,
        rtype: &str,
        want: &[&str],
        timeout: Duration,
    ) -> Dig {
        wait_until(
            timeout,
            &format!("{name} {rtype} to answer {want:?}"),
            || {
                let d = self.q(&[name, rtype]);
                (d.answers(rtype) == want).then_some(d)
            },
        )
    }
}

/// A query with ID `id` and header `flags` (`RD` or 0) for `name` (absolute or not), type
/// `qtype`, class `qclass`; with an OPT record of payload size `.0` and `.1` as its RDATA when
/// `edns` is given.
pub fn message(
    id: u16,
    flags: u16,
    name: &str,
    qtype: u16,
    qclass: u16,
    edns: Option<(u16, &[u8])>,
) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    if let Some((size, options)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0]);
        q.extend_from_slice(&u16::try_from(options.len()).expect("small").to_be_bytes());
        q.extend_from_slice(options);
    }
    q
}

/// A query for `name` (type `qtype`, class IN) with ID `id`, RD set as a stub resolver sends
/// it, no EDNS.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    message(id, RD, name, qtype, IN, None)
}

/// The ID of message `msg`.
pub fn id_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// The answer count of message `msg`.
pub fn answers_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[6], msg[7]])
}

/// Whether message `msg` has TC set.
pub fn truncated(msg: &[u8]) -> bool {
    msg[2] & 0x02 != 0
}

/// Whether `msg` is a response to query `id` with `rcode` and `answers` answer records.
pub fn is_answer(msg: &[u8], id: u16, rcode: u8, answers: u16) -> bool {
    msg.len() >= 12
        && id_of(msg) == id
        && msg[2] & 0x80 != 0
        && msg[3] & 0x0f == rcode
        && answers_of(msg) == answers
}

/// Whether `msg` is the NOERROR answer to query `id` for hello-world's three A records.
pub fn is_hello_world_answer(msg: &[u8], id: u16) -> bool {
    is_answer(msg, id, 0, 3)
}

/// A DNS message with its TCP length prefix.
pub fn tcp_frame(msg: &[u8]) -> Vec<u8> {
    let mut framed = u16::try_from(msg.len())
        .expect("message fits TCP")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(msg);
    framed
}

/// Reads one length-prefixed DNS message; `None` when the server closed the connection
/// cleanly (FIN) before it. A reset, a timeout or a message cut short are errors.
pub fn read_tcp_message(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    if s.read(&mut len[..1])? == 0 {
        return Ok(None);
    }
    s.read_exact(&mut len[1..])?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg)?;
    Ok(Some(msg))
}

/// Sends `msg` over TCP on `s` and reads the answer (`None`: closed or failed).
pub fn tcp_exchange(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    s.write_all(&tcp_frame(msg)).ok()?;
    read_tcp_message(s).ok().flatten()
}
