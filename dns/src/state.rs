//! The state on disk (`--state-dir`): the last snapshot of the records loaded from etcd, so a
//! restart while etcd is unreachable answers from it instead of SERVFAIL.
//!
//! Saving ([`Saver`]) costs little and never holds up the watch: the sync task hands over an
//! O(1) clone of its records after each change; the saver keeps only the latest (coalescing)
//! and writes at most once per [`SAVE_EVERY`] (the first right away), on a blocking thread, to
//! a temporary file of its own (PID, counter and random suffix, created new, removed if the
//! write fails) that is fsynced and then renamed over [`STATE_FILE`] (and the directory
//! fsynced), so the file is always a whole snapshot, the old or the new, even if two processes
//! share the directory by mistake (then the last rename wins). A last pending snapshot is
//! written at shutdown. While the records do not change, each progress notification of the
//! watch confirms them ([`SaveHandle::confirm`]) and the file is rewritten every
//! [`REFRESH_EVERY`], so its save time is when the records were last known to match etcd.
//! When the saver starts it removes our temporary files that nothing wrote to for
//! [`STALE_TEMP_AFTER`] (left by a process killed mid-write; others' files are left alone).
//!
//! The file, format version [`FORMAT_VERSION`]: one JSON object (format name, version, the etcd
//! revision and cluster ID, the prefix and zones it was taken for, when it was saved, and every
//! record as key, lease ID and SkyDNS value: JSON text re-encoded from the parsed record, which
//! reads back as the same record), then a line
//! `fnv1a64 <hex>` with a checksum of the JSON, so a truncated or damaged file is detected.
//!
//! Loading ([`load`]): a file over [`MAX_FILE_BYTES`] (refused from its size, unread), of
//! another version, saved for another prefix or other zones, damaged, or saved longer ago than
//! `--state-max-age` ([`DEFAULT_MAX_AGE`] by default) is an error the caller logs (with the
//! age, for a file too old) and counts; the file is then ignored. Loaded records are marked
//! complete and every zone's SOA serial is the snapshot's revision. Lease deadlines are not
//! saved: a leased record from disk answers as one whose lease is not known yet, with a TTL of
//! at most 30 s ([`crate::index::LEASE_TTL_FLOOR`]).
//!
//! When it is served: only when etcd has given no first load within
//! [`crate::sync::DISK_FALLBACK_AFTER`] (3 s) of the start, even if etcd is merely slow, not
//! down. That is deliberate: last-known answers beat SERVFAIL, and the first load from etcd
//! replaces the snapshot whole as soon as it is read and compiled (the snapshot is never
//! published over records from etcd).
//!
//! The cluster ID and serials: the sync task never resumes a watch from the snapshot's
//! revision; its first session always reads the whole prefix, so a snapshot from another etcd
//! cluster (or one restored from an older backup) cannot mix histories. When that load's
//! cluster differs from the snapshot's, or its revision is behind it ([`other_history`]), it is
//! reported as a diverged history is while following etcd (a warning, and
//! `fedplane_dns_etcd_reloads_total{reason="diverged"}`). etcd derives the cluster ID from its
//! members' configuration, so an etcd rebuilt from scratch with the same configuration has the
//! same ID: the sign is then its revision, behind the snapshot's. (One rebuilt that is already
//! past the snapshot's revision shows nothing, and needs nothing: the load still replaces the
//! snapshot whole, and the serials go forward.) The SOA serials restart at the
//! new etcd's revision, as they do after a diverged reload without any restart: serials are
//! etcd revisions, the same on every replica following one etcd, and zone transfer is not
//! served (AXFR and IXFR answer NOTIMP), so no secondary holds a serial that could go back. A
//! per-replica serial floor would make replicas behind one address disagree; if zone transfer
//! is ever served, serials across an etcd rebuild need a floor shared by the replicas.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apply::{InvalidKeys, Kv, Load};
use crate::index::{Records, Zones};
use crate::record::{Host, Record};

/// How far in the future a snapshot's save time may be (clocks of two hosts differ a little)
/// before its age counts as unknown.
const CLOCK_SLACK: Duration = Duration::from_secs(300);
/// The snapshot's file name in the state directory.
pub const STATE_FILE: &str = "fedplane-dns.state";
/// The format written, and the only one read.
pub const FORMAT_VERSION: u32 = 1;
/// Shortest time between two writes of the file.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);
/// While the records do not change but etcd confirms them, the file is rewritten this often,
/// so its save time says when it was last known to match etcd (what `--state-max-age` and
/// `fedplane_dns_state_age_seconds` measure).
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// A snapshot saved longer ago than this is not served, by default (`--state-max-age`): a
/// week covers an etcd outage over a long weekend and its repair, and what a federation
/// publishes changes slowly; past that, SERVFAIL says plainly that nothing current is known.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest state file read: about 5,000,000 records at their largest usual size (a
/// 900,000-key zone saves about 150 MiB). Anything bigger is not ours (a wrong file, or a
/// wrong `--state-dir`) and is refused unread, like a damaged file.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Temporary files not written to for this long are left by a process that died mid-write:
/// removed when the saver starts (a write in progress writes every 1 MiB).
pub const STALE_TEMP_AFTER: Duration = Duration::from_secs(600);
const FORMAT_NAME: &str = "fedplane-dns-state";
const CHECKSUM_PREFIX: &str = "fnv1a64 ";

/// Why the state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed (other than the file not being there).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing, syncing or renaming failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a whole state file (truncated, damaged, or something else).
    #[error("{path} is damaged or not a fedplane-dns state file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is (or would be) larger than [`MAX_FILE_BYTES`]: not read (nor kept, when saving).
    #[error("{path} is {size} bytes or more, more than a state file may be ({max} bytes)")]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Its size (at least).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The file was saved longer ago than `--state-max-age`.
    #[error(
        "{path} was saved {age:?} ago, longer than --state-max-age {max_age:?}: too old to serve"
    )]
    TooOld {
        /// The file.
        path: PathBuf,
        /// Its age.
        age: Duration,
        /// The limit.
        max_age: Duration,
    },
    /// The file says it was saved later than now (a clock that was ahead, or went back since):
    /// its age is unknown.
    #[error(
        "{path} was saved {ahead:?} in the future (a clock ahead then, or back now): its age is unknown, not served"
    )]
    FromTheFuture {
        /// The file.
        path: PathBuf,
        /// How far ahead of now.
        ahead: Duration,
    },
    /// The file has another format version.
    #[error("{path} has format version {found}; this fedplane-dns reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The file was saved for another prefix or other zones.
    #[error(
        "{path} was saved for prefix {saved_prefix} and zones {saved_zones:?}, not prefix {prefix} and zones {zones:?}"
    )]
    OtherZones {
        /// The file.
        path: PathBuf,
        /// Its prefix.
        saved_prefix: String,
        /// Its zones.
        saved_zones: Vec<String>,
        /// Our prefix.
        prefix: String,
        /// Our zones.
        zones: Vec<String>,
    },
}

/// A snapshot read from disk.
#[derive(Debug)]
pub struct Loaded {
    /// The records, complete, at the saved revision.
    pub records: Records,
    /// The etcd cluster they came from.
    pub cluster_id: u64,
    /// When they were saved.
    pub saved_at: SystemTime,
    /// Saved values that no longer parse (none unless the record format changed).
    pub skipped: usize,
}

/// The zones as saved: apex names, fully qualified, sorted.
fn zone_names(zones: &Zones) -> Vec<String> {
    let mut names: Vec<String> = zones.iter().map(|z| z.name.to_ascii()).collect();
    names.sort();
    names
}

/// A record as SkyDNS JSON that [`Record::parse`] reads back as the same record.
struct SkyDns<'a>(&'a Record);

impl Serialize for SkyDns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        match &r.host {
            Host::None => {}
            Host::V4(a) => m.serialize_entry("host", &a.to_string())?,
            Host::V6(a) => m.serialize_entry("host", &a.to_string())?,
            Host::Name(n) => m.serialize_entry("host", &n.to_ascii())?,
        }
        match r.port {
            None => m.serialize_entry("port", &-1)?,
            Some(0) => {}
            Some(p) => m.serialize_entry("port", &p)?,
        }
        if r.priority != 0 {
            m.serialize_entry("priority", &r.priority)?;
        }
        if r.weight != 0 {
            m.serialize_entry("weight", &r.weight)?;
        }
        if !r.text.is_empty() {
            m.serialize_entry("text", &r.text)?;
        }
        if r.mail {
            m.serialize_entry("mail", &true)?;
        }
        if r.ttl != 0 {
            m.serialize_entry("ttl", &r.ttl)?;
        }
        if r.target_strip != 0 {
            m.serialize_entry("targetstrip", &r.target_strip)?;
        }
        if !r.group.is_empty() {
            m.serialize_entry("group", &r.group)?;
        }
        if !r.zone.is_empty() {
            m.serialize_entry("zone", &r.zone)?;
        }
        if !r.region.is_empty() {
            m.serialize_entry("region", &r.region)?;
        }
        m.end()
    }
}

/// Every record of `records`, streamed as a JSON array.
struct Entries<'a>(&'a Records);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0.entries() {
            let value = serde_json::to_string(&SkyDns(&e.record)).map_err(S::Error::custom)?;
            seq.serialize_element(&SavedEntry {
                key: &e.key,
                lease: e.lease,
                value: &value,
            })?;
        }
        seq.end()
    }
}

/// One record: its key, lease ID, and its value as the JSON text etcd would hold (a string, so
/// reading it back costs one string, not a JSON tree).
#[derive(Serialize)]
struct SavedEntry<'a> {
    key: &'a str,
    lease: i64,
    value: &'a str,
}

#[derive(Serialize)]
struct SavedFile<'a> {
    format: &'static str,
    version: u32,
    revision: i64,
    cluster_id: u64,
    prefix: &'a str,
    zones: Vec<String>,
    saved_unix_ms: u64,
    records: Entries<'a>,
}

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Deserialize)]
struct ReadFile {
    revision: i64,
    cluster_id: u64,
    prefix: String,
    zones: Vec<String>,
    saved_unix_ms: u64,
    records: Vec<ReadEntry>,
}

#[derive(Deserialize)]
struct ReadEntry {
    key: String,
    lease: i64,
    value: String,
}

/// 64-bit FNV-1a: finds truncation and damage (not tampering).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A writer that checksums what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Fnv,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot of `records` to `w`: the bytes of a state file ([`save`] writes them
/// to the file; public for the fuzzer's round trip).
pub fn encode(
    w: impl Write,
    records: &Records,
    cluster_id: u64,
    saved_at: SystemTime,
) -> std::io::Result<()> {
    let mut h = Hashing {
        inner: w,
        hash: Fnv::new(),
    };
    let file = SavedFile {
        format: FORMAT_NAME,
        version: FORMAT_VERSION,
        revision: records.revision(),
        cluster_id,
        prefix: records.zones().prefix(),
        zones: zone_names(records.zones()),
        saved_unix_ms: saved_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        records: Entries(records),
    };
    serde_json::to_writer(&mut h, &file)?;
    h.write_all(b"\n")?;
    let sum = h.hash.0;
    writeln!(h.inner, "{CHECKSUM_PREFIX}{sum:016x}")?;
    h.inner.flush()
}

/// `body` (the JSON line of a state file, newline included) followed by its checksum line: a
/// file whose checksum holds, as [`encode`] ends one (for the fuzzer, whose inputs would
/// otherwise almost never get past the checksum).
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut hash = Fnv::new();
    hash.update(body);
    let mut out = body.to_vec();
    out.extend_from_slice(format!("{CHECKSUM_PREFIX}{:016x}\n", hash.0).as_bytes());
    out
}

/// Reads a snapshot from the bytes of a state file, for `zones`; `path` names the file in
/// errors. What [`load`] does once it has read the file; public for the fuzzer.
pub fn decode(path: &Path, bytes: &[u8], zones: &Arc<Zones>) -> Result<Loaded, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let text = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| corrupt("it does not end with a newline (truncated?)".into()))?;
    let split = text
        .iter()
        .rposition(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no checksum line (truncated?)".into()))?;
    let (body, trailer) = (&text[..=split], &text[split + 1..]);
    let want = std::str::from_utf8(trailer)
        .ok()
        .and_then(|t| t.strip_prefix(CHECKSUM_PREFIX))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("no checksum line (truncated?)".into()))?;
    let mut hash = Fnv::new();
    hash.update(body);
    if hash.0 != want {
        return Err(corrupt(format!(
            "checksum {:016x} does not match {want:016x}",
            hash.0
        )));
    }
    let header: Header = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    if header.format != FORMAT_NAME {
        return Err(corrupt(format!("format {:?}", header.format)));
    }
    if header.version != FORMAT_VERSION {
        return Err(StateError::Version {
            path: path.to_owned(),
            found: header.version,
        });
    }
    let file: ReadFile = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    let ours = zone_names(zones);
    if file.prefix != zones.prefix() || file.zones != ours {
        return Err(StateError::OtherZones {
            path: path.to_owned(),
            saved_prefix: file.prefix,
            saved_zones: file.zones,
            prefix: zones.prefix().to_owned(),
            zones: ours,
        });
    }
    let mut load = Load::new(zones.clone(), file.revision);
    let rejected = load.page(
        &InvalidKeys::default(),
        file.records.iter().map(|e| Kv {
            key: e.key.as_bytes(),
            value: e.value.as_bytes(),
            lease: e.lease,
            revision: file.revision,
        }),
    );
    let (records, _) = load.finish(file.revision);
    Ok(Loaded {
        records,
        cluster_id: file.cluster_id,
        saved_at: UNIX_EPOCH + Duration::from_millis(file.saved_unix_ms),
        skipped: rejected.len(),
    })
}

/// Whether etcd's records, from cluster `cluster` at `revision`, continue the history of a
/// snapshot saved from cluster `saved_cluster` at `saved_revision`: `None` when they do, else
/// why not (another cluster, or a revision behind the snapshot's: etcd was rebuilt or
/// restored from an older backup). Either way etcd's records replace the snapshot whole; this
/// only says whether to report it like a diverged history.
pub fn other_history(
    saved_cluster: u64,
    saved_revision: i64,
    cluster: u64,
    revision: i64,
) -> Option<String> {
    if cluster != saved_cluster {
        Some(format!(
            "etcd is cluster {cluster:x}, the saved state is from cluster {saved_cluster:x}"
        ))
    } else if revision < saved_revision {
        Some(format!(
            "etcd is at revision {revision}, behind the saved state's {saved_revision}"
        ))
    } else {
        None
    }
}

/// The prefix of our temporary files in the state directory: `.fedplane-dns.state.tmp.`
/// then the process ID and a random suffix, unique to each write.
fn temp_prefix() -> String {
    format!(".{STATE_FILE}.tmp.")
}

/// A temporary file name no other write (of this process or another, even one with the same
/// PID in another PID namespace) uses: the PID, a per-process counter, and a random number.
fn temp_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's randomness: a random u64 with no dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{}.{n}.{random:016x}", temp_prefix(), std::process::id())
}

/// Writes the snapshot of `records` to `dir`/[`STATE_FILE`] atomically: a temporary file of
/// its own (`temp_name`: PID, counter, random suffix; created new, removed if anything fails),
/// fsynced, renamed over the old one, then the directory fsynced. Two processes sharing `dir`
/// by mistake never write into each other's temporary file: the file is always one whole
/// snapshot (the last renamed).
pub fn save(dir: &Path, records: &Records, cluster_id: u64) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(temp_name());
    let write_err = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    let written = (|| {
        let file = File::options().write(true).create_new(true).open(&tmp)?;
        // A file no load would read is not worth writing: stop at the cap.
        let capped = Capped {
            inner: file,
            written: 0,
            cap: MAX_FILE_BYTES,
        };
        let mut w = BufWriter::with_capacity(1 << 20, capped);
        encode(&mut w, records, cluster_id, SystemTime::now())?;
        let file = w
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .inner;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(if e.kind() == std::io::ErrorKind::FileTooLarge {
            StateError::TooBig {
                path,
                size: MAX_FILE_BYTES + 1,
                max: MAX_FILE_BYTES,
            }
        } else {
            write_err(e)
        });
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(())
}

/// Writes to `inner`, failing (`FileTooLarge`) rather than writing more than `cap` bytes.
struct Capped<W> {
    inner: W,
    written: u64,
    cap: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "more than a state file may be",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Removes our temporary files in `dir` (named as `temp_name` names them) that nothing has
/// written to for [`STALE_TEMP_AFTER`] at `now`: left by a process that died mid-write. Returns
/// how many were removed; errors are ignored (a file left is only wasted space).
pub fn remove_stale_temps(dir: &Path, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefix = temp_prefix();
    let mut removed = 0;
    for entry in entries.flatten() {
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .is_some_and(|m| now.duration_since(m).unwrap_or_default() >= STALE_TEMP_AFTER);
        if ours && stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Reads the snapshot in `dir` for `zones`; `Ok(None)` when there is none. A file over
/// [`MAX_FILE_BYTES`] is refused unread, and a snapshot saved more than `max_age` ago is
/// refused ([`StateError::TooOld`]).
pub fn load(
    dir: &Path,
    zones: &Arc<Zones>,
    max_age: Duration,
) -> Result<Option<Loaded>, StateError> {
    load_capped(dir, zones, max_age, SystemTime::now(), MAX_FILE_BYTES)
}

fn load_capped(
    dir: &Path,
    zones: &Arc<Zones>,
    max_age: Duration,
    now: SystemTime,
    max_bytes: u64,
) -> Result<Option<Loaded>, StateError> {
    use std::io::Read;
    let path = dir.join(STATE_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let read_err = |source| StateError::Read {
        path: path.clone(),
        source,
    };
    let too_big = |size| StateError::TooBig {
        path: path.clone(),
        size,
        max: max_bytes,
    };
    let size = file.metadata().map_err(read_err)?.len();
    if size > max_bytes {
        return Err(too_big(size));
    }
    // The size may change while we read (another writer): never read past the cap.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big(bytes.len() as u64));
    }
    let loaded = decode(&path, &bytes, zones)?;
    let age = match now.duration_since(loaded.saved_at) {
        Ok(age) => age,
        // A little ahead is clock noise between hosts (a moved volume); more is unknown age.
        Err(e) if e.duration() <= CLOCK_SLACK => Duration::ZERO,
        Err(e) => {
            return Err(StateError::FromTheFuture {
                path,
                ahead: e.duration(),
            });
        }
    };
    if age > max_age {
        return Err(StateError::TooOld { path, age, max_age });
    }
    Ok(Some(loaded))
}

/// A snapshot waiting to be saved.
#[derive(Debug, Clone)]
struct Pending {
    records: Records,
    cluster_id: u64,
    /// Bumped by each offer: the saver writes a generation it has not written.
    generation: u64,
}

/// Hands snapshots to the saver; cheap to call after every change.
#[derive(Debug, Clone)]
pub struct SaveHandle(Option<watch::Sender<Option<Pending>>>);

impl SaveHandle {
    /// A handle that saves nothing (no state directory).
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Offers the records loaded from etcd `cluster_id` (an O(1) clone) for saving; a newer
    /// offer replaces one not written yet.
    pub fn offer(&self, records: &Records, cluster_id: u64) {
        if let Some(tx) = &self.0 {
            tx.send_modify(|p| {
                let generation = p.as_ref().map_or(1, |p| p.generation + 1);
                *p = Some(Pending {
                    records: records.clone(),
                    cluster_id,
                    generation,
                });
            });
        }
    }

    /// Says etcd has just confirmed that the records last offered are current (a progress
    /// notification): the saver rewrites them when its file is [`REFRESH_EVERY`] old, so the
    /// saved time stays the time they were last known current.
    pub fn confirm(&self) {
        if let Some(tx) = &self.0 {
            tx.send_if_modified(|p| p.is_some());
        }
    }
}

/// Writes the offered snapshots to the state directory, at most once per [`SAVE_EVERY`], and
/// rewrites a confirmed one every [`REFRESH_EVERY`].
#[derive(Debug)]
pub struct Saver {
    dir: PathBuf,
    rx: watch::Receiver<Option<Pending>>,
    every: Duration,
    refresh: Duration,
    /// The generation last written.
    written: u64,
}

impl Saver {
    /// A saver into `dir` and the handle that feeds it.
    pub fn new(dir: PathBuf) -> (Self, SaveHandle) {
        Self::with_intervals(dir, SAVE_EVERY, REFRESH_EVERY)
    }

    fn with_intervals(dir: PathBuf, every: Duration, refresh: Duration) -> (Self, SaveHandle) {
        let (tx, rx) = watch::channel(None);
        let saver = Self {
            dir,
            rx,
            every,
            refresh,
            written: 0,
        };
        (saver, SaveHandle(Some(tx)))
    }

    /// Whether the latest offer is a generation not written yet.
    fn unwritten(&self) -> bool {
        self.rx
            .borrow()
            .as_ref()
            .is_some_and(|p| p.generation != self.written)
    }

    /// Saves offered snapshots until `cancel` fires, then the last one not saved yet. First
    /// removes the temporary files a process that died mid-write left ([`remove_stale_temps`]).
    pub async fn run(mut self, cancel: CancellationToken) {
        let dir = self.dir.clone();
        if let Ok(n @ 1..) =
            tokio::task::spawn_blocking(move || remove_stale_temps(&dir, SystemTime::now())).await
        {
            info!(removed = n, dir = %self.dir.display(), "removed temporary state files left by an interrupted write");
        }
        let mut last: Option<Instant> = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                r = self.rx.changed() => if r.is_err() { break },
            }
            // A new offer, or a confirmation of the one written once that write is old.
            let due = self.unwritten() || last.is_some_and(|at| at.elapsed() >= self.refresh);
            if !due {
                continue;
            }
            if let Some(at) = last {
                tokio::select! {
                    // `changed()` marked the offer seen: it is still to be written.
                    () = cancel.cancelled() => {
                        if self.unwritten() {
                            self.save_latest().await;
                        }
                        return;
                    }
                    () = tokio::time::sleep_until((at + self.every).into()) => {}
                }
            }
            last = Some(Instant::now());
            self.save_latest().await;
        }
        if self.unwritten() {
            self.save_latest().await;
        }
    }

    async fn save_latest(&mut self) {
        let Some(p) = self.rx.borrow_and_update().clone() else {
            return;
        };
        let dir = self.dir.clone();
        let started = Instant::now();
        let revision = p.records.revision();
        let records = p.records.len();
        let generation = p.generation;
        let saved = tokio::task::spawn_blocking(move || save(&dir, &p.records, p.cluster_id)).await;
        match saved {
            Ok(Ok(())) => {
                self.written = generation;
                metrics::counter!("fedplane_dns_state_saves_total", "result" => "ok").increment(1);
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("fedplane_dns_state_saved_revision").set(revision as f64);
                tracing::debug!(revision, records, took = ?started.elapsed(), "saved the state");
            }
            Ok(Err(e)) => {
                metrics::counter!("fedplane_dns_state_saves_total", "result" => "error")
                    .increment(1);
                warn!(error = %e, "cannot save the state; the last saved one stays");
            }
            Err(e) => {
                metrics::counter!("fedplane_dns_state_saves_total", "result" => "error")
                    .increment(1);
                warn!(error = %e, "the state save task failed");
            }
        }
    }
}

/// Reads the snapshot in `dir` on a blocking thread and logs the outcome; `None` when there is
/// none or it cannot be used (too big, damaged, for other zones, older than `max_age`: then
/// the error is logged and counted).
pub async fn load_logged(dir: PathBuf, zones: Arc<Zones>, max_age: Duration) -> Option<Loaded> {
    let shown = dir.join(STATE_FILE);
    let loaded = tokio::task::spawn_blocking(move || load(&dir, &zones, max_age)).await;
    match loaded {
        Ok(Ok(Some(l))) => {
            let age = SystemTime::now()
                .duration_since(l.saved_at)
                .unwrap_or_default();
            info!(file = %shown.display(), revision = l.records.revision(), records = l.records.len(),
                  age = ?age, skipped = l.skipped, cluster_id = %format_args!("{:x}", l.cluster_id),
                  "read the saved state");
            Some(l)
        }
        Ok(Ok(None)) => {
            info!(file = %shown.display(), "no saved state");
            None
        }
        Ok(Err(e)) => {
            metrics::counter!("fedplane_dns_state_load_errors_total").increment(1);
            warn!(error = %e, "cannot use the saved state; ignoring it");
            None
        }
        Err(e) => {
            metrics::counter!("fedplane_dns_state_load_errors_total").increment(1);
            warn!(error = %e, "cannot use the saved state: the read task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests;
