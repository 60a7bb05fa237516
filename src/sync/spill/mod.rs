//! The de-duplicated users of one pull, kept on disk so memory does not grow with the data.
//!
//! Okta must see each externalId once per run, the last record winning, in first-seen order.
//! Keeping every mapped user in memory until packing made a 1,000,000-row file cost gigabytes.
//! Instead each mapped user is appended to an anonymous temporary file as it arrives, and only
//! the index stays in memory: externalId → slot, and per slot (in first-seen order) where the
//! latest version lies in the file. A later duplicate appends its own copy and moves the slot;
//! the older copy becomes dead bytes in the file.
//!
//! Packing reads the users back slot by slot, serializes them a batch at a time on several
//! threads and feeds the entries to one `okta::batch::Packer` (see [`Sessions`]), so one
//! batch of entries and the open session's request bodies are in memory.
//! The file is deleted by the OS when the `Spill` is dropped (it never has a name).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use crate::mapping::{GroupRef, HASH_BYTES, MappedUser, Origin, groups_fingerprint};
use crate::okta::batch::{self, Limits, Oversized, SessionMode, SessionPlan};

/// Bytes read from the file per `pread` when reading back.
const READ_WINDOW: usize = 1 << 20;

mod index;

pub use index::IdHasher;
use index::{Index, Slot};

/// The on-disk form of a [`MappedUser`], as written (borrowing, so nothing is cloned), in
/// postcard: compact, and several times faster to write and read than JSON. The id comes
/// first, then where the record was, then what the delta compares (the slot holds only a
/// check of those): [`Head`] reads only these.
#[derive(Serialize)]
struct StoredRef<'a> {
    id: &'a str,
    line: bool,
    at: u64,
    hash: [u8; HASH_BYTES],
    groups_fingerprint: u64,
    active: bool,
    profile: &'a BTreeMap<String, String>,
    #[serde(serialize_with = "groups_as_tuples")]
    groups: &'a [GroupRef],
    links: &'a BTreeMap<String, String>,
}

/// postcard writes every field (it is not self-describing), and `GroupRef` skips an absent
/// description in JSON: groups are stored as plain tuples instead.
fn groups_as_tuples<S: serde::Serializer>(groups: &&[GroupRef], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(groups.iter().map(|g| (&g.external_id, &g.display_name, &g.description)))
}

/// The origin a stored record names (`line`: a file line, else a stream position).
fn origin(line: bool, at: u64) -> Origin {
    if line { Origin::Line(at) } else { Origin::Index(at) }
}

/// The start of a stored record: the id, where the record was, and what the delta compares.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: &'a str,
    /// `true`: a file line; `false`: a stream position.
    line: bool,
    at: u64,
    /// [`MappedUser::content_hash`].
    hash: [u8; HASH_BYTES],
    /// [`groups_fingerprint`] of the user's groups.
    groups_fingerprint: u64,
}

impl Head<'_> {
    fn origin(&self) -> Origin {
        origin(self.line, self.at)
    }
}

/// What `f` takes from the start of the record in `slot`, read with one exact positioned read
/// (for lookups out of order, where a [`Window`] would read a megabyte per record).
fn read_record<T>(
    file: &File,
    slot: &Slot,
    f: impl FnOnce(Head<'_>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut buf = vec![0; slot.len()];
    file.read_exact_at(&mut buf, slot.offset())?;
    let (head, _): (Head<'_>, _) =
        postcard::take_from_bytes(&buf).map_err(std::io::Error::other)?;
    f(head)
}

/// The on-disk form of a [`MappedUser`], as read back.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    head: Head<'a>,
    active: bool,
    profile: BTreeMap<String, String>,
    groups: Vec<(String, String, Option<String>)>,
    links: BTreeMap<String, String>,
}

/// A mapped user made ready for [`Spill::push_encoded`]: encoding is the costly part of
/// spilling (serializing, the content hash, hashing the id), so it runs on the mapping
/// workers, and the pull's own task only appends bytes and updates the index.
#[derive(Debug)]
pub struct Encoded {
    pub external_id: String,
    pub origin: Origin,
    key: u128,
    bytes: Vec<u8>,
    active: bool,
    hash: [u8; HASH_BYTES],
    groups: u64,
    /// The group ids an active user derives.
    derived: Vec<String>,
}

impl Encoded {
    /// Encode `user` (the hasher is [`Spill::hasher`]).
    pub fn new(user: &MappedUser, hasher: &IdHasher) -> std::io::Result<Self> {
        let (line, at) = match user.origin {
            Origin::Line(l) => (true, l),
            Origin::Index(i) => (false, i),
        };
        let hash = user.content_hash();
        let groups = groups_fingerprint(user.groups.iter().map(|g| g.external_id.as_str()));
        let stored = StoredRef {
            id: &user.external_id,
            line,
            at,
            hash,
            groups_fingerprint: groups,
            active: user.active,
            profile: &user.profile,
            groups: &user.groups,
            links: &user.links,
        };
        let bytes = postcard::to_stdvec(&stored).map_err(std::io::Error::other)?;
        let derived = if user.active {
            user.groups.iter().map(|g| g.external_id.clone()).collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            key: hasher.key(&user.external_id),
            external_id: user.external_id.clone(),
            origin: user.origin.clone(),
            bytes,
            active: user.active,
            hash,
            groups,
            derived,
        })
    }
}

/// De-duplicated users, spilled to a temporary file.
pub struct Spill {
    file: File,
    writer: Option<BufWriter<File>>,
    written: u64,
    /// Bytes known to be in the file (not in the writer's buffer).
    flushed: u64,
    index: Index,
    /// The groups active users derive (one id per group).
    derived: HashSet<Box<str>>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("users", &self.index.len())
            .field("bytes", &self.written)
            .finish()
    }
}

impl Spill {
    /// An empty spill backed by an anonymous temporary file.
    pub fn new() -> std::io::Result<Self> {
        let file = tempfile::tempfile()?;
        let writer = BufWriter::with_capacity(1 << 16, file.try_clone()?);
        Ok(Self {
            file,
            writer: Some(writer),
            written: 0,
            flushed: 0,
            index: Index::default(),
            derived: HashSet::new(),
        })
    }

    /// Distinct users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// The hasher [`Encoded::new`] needs, for encoding on other threads.
    pub fn hasher(&self) -> IdHasher {
        self.index.hasher()
    }

    /// Add a user (encoding it here; see [`Self::push_encoded`]).
    pub fn push(&mut self, user: &MappedUser) -> std::io::Result<Option<Origin>> {
        let encoded = Encoded::new(user, &self.hasher())?;
        self.push_encoded(&encoded)
    }

    /// Add an encoded user. When its externalId was seen before, the new version replaces the
    /// old one in place (first-seen order is kept) and the old version's origin is returned.
    pub fn push_encoded(&mut self, user: &Encoded) -> std::io::Result<Option<Origin>> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the spill is closed for writing"))?;
        let slot = Slot::new(self.written, user.bytes.len(), user.active, user.hash, user.groups)?;
        writer.write_all(&user.bytes)?;
        self.written += user.bytes.len() as u64;
        for g in &user.derived {
            if !self.derived.contains(g.as_str()) {
                self.derived.insert(g.as_str().into());
            }
        }
        let Some(at) = self.index.find(user.key) else {
            self.index.push(user.key, slot)?;
            return Ok(None);
        };
        let old = *self.index.slot(at);
        self.flush_for(&old)?;
        let (id, origin) = read_record(&self.file, &old, |h| Ok((h.id.to_string(), h.origin())))?;
        if id != user.external_id {
            // Two ids with one 128-bit key (about 10^-26 for five million): never merged.
            return Err(std::io::Error::other(format!(
                "the externalIds `{id}` and `{}` share a 128-bit index key; nothing is sent: \
                 run again (the key changes with every process) and report this",
                user.external_id
            )));
        }
        self.index.replace(at, slot);
        Ok(Some(origin))
    }

    /// Flush the writer when `slot` lies (partly) in its buffer, so the file holds it: a
    /// duplicate reads back the older record (for its id and origin: no slot holds them).
    fn flush_for(&mut self, slot: &Slot) -> std::io::Result<()> {
        if slot.offset() + slot.len() as u64 > self.flushed {
            if let Some(w) = self.writer.as_mut() {
                w.flush()?;
            }
            self.flushed = self.written;
        }
        Ok(())
    }

    /// Flush writes; call once the pull is over, before reading back.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// Every user, in first-seen order, each in its latest version.
    pub fn iter(&self) -> impl Iterator<Item = std::io::Result<MappedUser>> + '_ {
        let mut reader = Window::new(&self.file);
        self.index.slots().map(move |s| reader.user(s))
    }

    /// The slot (first-seen position) of `external_id`.
    pub fn slot_of(&self, external_id: &str) -> Option<usize> {
        self.index.get(external_id)
    }

    /// Whether the user in `slot` is active.
    pub fn slot_active(&self, slot: usize) -> bool {
        self.index.slot(slot).active()
    }

    /// The content hash (in hex, as the state stores it) and groups fingerprint of the user in
    /// `slot`, given what a state entry holds (`hash`, hex, and the fingerprint of its
    /// confirmed groups): answered from memory when both are equal, read back from the file
    /// otherwise (the slot holds only a check of the two).
    pub fn content_against(
        &self,
        slot: usize,
        hash: Option<&str>,
        groups: u64,
    ) -> std::io::Result<(String, u64)> {
        let s = self.index.slot(slot);
        let mut bytes = [0u8; HASH_BYTES];
        if let Some(h) = hash
            && hex::decode_to_slice(h, &mut bytes).is_ok()
            && s.may_match(&bytes, groups)
        {
            return Ok((h.to_string(), groups));
        }
        read_record(&self.file, s, |h| Ok((hex::encode(h.hash), h.groups_fingerprint)))
    }

    /// The content hashes, in hex, of the users in `slots` (ascending order reads the file
    /// mostly sequentially).
    pub fn content_hashes(&self, slots: &[usize]) -> std::io::Result<Vec<String>> {
        let mut reader = Window::new(&self.file);
        slots.iter().map(|&i| reader.head(self.index.slot(i), |h| hex::encode(h.hash))).collect()
    }

    /// Free the externalId index (and the derived groups) of a spill that will only be read
    /// back in order from now on: `sync::references` does so before it writes the resolved
    /// copy, so two indexes are never held at once. [`Self::slot_of`] finds nothing after.
    pub fn forget_index(&mut self) {
        self.index.forget_ids();
        self.derived = HashSet::new();
    }

    /// Every distinct externalId, in first-seen order, read back from the file (the index
    /// holds only their keys).
    pub fn ids(&self) -> impl Iterator<Item = std::io::Result<String>> + '_ {
        let mut reader = Window::new(&self.file);
        self.index.slots().map(move |s| reader.id(s))
    }

    /// Read back the users of `slots` (ascending order reads the file mostly sequentially).
    pub fn read_slots(&self, slots: &[usize]) -> std::io::Result<Vec<MappedUser>> {
        let mut reader = Window::new(&self.file);
        slots.iter().map(|&i| reader.user(self.index.slot(i))).collect()
    }

    /// Users to upsert and to deactivate.
    pub fn counts(&self) -> (u64, u64) {
        let active = self.index.slots().filter(|s| s.active()).count() as u64;
        (active, self.index.len() as u64 - active)
    }

    /// The sessions `batch::pack` would build from all users, one at a time.
    pub fn sessions(&self, mode: SessionMode, limits: Limits) -> Sessions<'_> {
        self.sessions_selected(mode, limits, None, &[], &NO_REMOVALS)
    }

    /// Whether an active user of the pull derives the group. A user replaced by a later
    /// duplicate still counts: that can only keep a group longer, never retire one early.
    pub fn derives(&self, group: &str) -> bool {
        self.derived.contains(group)
    }

    /// The sessions of a delta: only the slots whose `send` flag is set, then deactivations of
    /// `extra_deletes` (leavers missing from the pull, so not in the spill) after the pulled
    /// inactive users.
    pub fn sessions_selected<'a>(
        &'a self,
        mode: SessionMode,
        limits: Limits,
        send: Option<&'a [bool]>,
        extra_deletes: &'a [String],
        removals: &'a GroupRemovals,
    ) -> Sessions<'a> {
        let deletes_pulled = self.index.slots().enumerate().any(|(i, s)| {
            !s.active() && send.is_none_or(|send| send.get(i).copied().unwrap_or(false))
        });
        Sessions {
            has_delete_part: deletes_pulled
                || !extra_deletes.is_empty()
                || !removals.leavers.is_empty(),
            removals,
            send,
            extra_deletes,
            spill: self,
            mode,
            phase: 0,
            cursor: 0,
            packer: Some(batch::Packer::new(limits)),
            ready: VecDeque::new(),
            oversized: Vec::new(),
            groups: Groups::default(),
        }
    }
}

/// What a run takes away besides deactivations (see [`Removals`]), decided by the delta.
/// Memory: one id per removed membership, so it grows with the changes, not with the pull.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupRemovals {
    /// Users upserted this run and the memberships (group externalIds) they lose.
    pub movers: Vec<(String, Vec<String>)>,
    /// Users deactivated, or already inactive, and the memberships they lose.
    pub leavers: Vec<(String, Vec<String>)>,
    /// Groups this job created to delete.
    pub groups: Vec<String>,
}

/// No removals.
pub static NO_REMOVALS: GroupRemovals =
    GroupRemovals { movers: Vec::new(), leavers: Vec::new(), groups: Vec::new() };

impl GroupRemovals {
    /// Memberships removed in all.
    pub fn memberships(&self) -> u64 {
        self.movers.iter().chain(&self.leavers).map(|(_, g)| g.len() as u64).sum()
    }

    /// Whether nothing is removed.
    pub fn is_empty(&self) -> bool {
        self.movers.is_empty() && self.leavers.is_empty() && self.groups.is_empty()
    }
}

/// Per-user removals turned into per-group member lists, in group order.
pub fn by_group(list: &[(String, Vec<String>)]) -> Vec<(&str, Vec<&str>)> {
    let mut at: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (user, groups) in list {
        for g in groups {
            at.entry(g.as_str()).or_default().push(user.as_str());
        }
    }
    at.into_iter().collect()
}

/// Groups and memberships of the active users, gathered over the whole pull: a chunk holds
/// only part of a group's members, so they are packed once, after the last active user, as
/// `batch::pack` does for a whole pull. Memory: one id per membership.
#[derive(Debug, Default)]
struct Groups {
    groups: Vec<GroupRef>,
    at: HashMap<String, usize>,
    members: Vec<Vec<String>>,
}

impl Groups {
    fn add(&mut self, user: &str, groups: &[GroupRef]) {
        for g in groups {
            let i = match self.at.get(&g.external_id) {
                Some(&i) => i,
                None => {
                    self.at.insert(g.external_id.clone(), self.groups.len());
                    self.groups.push(g.clone());
                    self.members.push(Vec::new());
                    self.groups.len() - 1
                }
            };
            self.members[i].push(user.to_string());
        }
    }
}

/// Reads back stored users with large positioned reads (no shared file offset, so several
/// readers may coexist).
struct Window<'a> {
    file: &'a File,
    start: u64,
    buf: Vec<u8>,
    /// Bytes read at once (a record longer than that is read whole).
    size: usize,
}

impl<'a> Window<'a> {
    fn new(file: &'a File) -> Self {
        Self::sized(file, READ_WINDOW)
    }

    fn sized(file: &'a File, size: usize) -> Self {
        Self { file, start: 0, buf: Vec::new(), size: size.max(1) }
    }

    /// The externalId of the record in `slot` (only the id is decoded).
    fn id(&mut self, slot: &Slot) -> std::io::Result<String> {
        let (id, _): (&str, _) =
            postcard::take_from_bytes(self.bytes(slot)?).map_err(std::io::Error::other)?;
        Ok(id.to_string())
    }

    /// What `f` takes from the start of the record in `slot`.
    fn head<T>(&mut self, slot: &Slot, f: impl FnOnce(Head<'_>) -> T) -> std::io::Result<T> {
        let (head, _): (Head<'_>, _) =
            postcard::take_from_bytes(self.bytes(slot)?).map_err(std::io::Error::other)?;
        Ok(f(head))
    }

    fn user(&mut self, slot: &Slot) -> std::io::Result<MappedUser> {
        let stored: Stored<'_> =
            postcard::from_bytes(self.bytes(slot)?).map_err(std::io::Error::other)?;
        Ok(MappedUser {
            origin: stored.head.origin(),
            external_id: stored.head.id.to_string(),
            active: stored.active,
            profile: stored.profile,
            groups: stored
                .groups
                .into_iter()
                .map(|(external_id, display_name, description)| GroupRef {
                    external_id,
                    display_name,
                    description,
                })
                .collect(),
            links: stored.links,
        })
    }

    /// The stored bytes of `slot`, reading the window that holds them when needed.
    fn bytes(&mut self, slot: &Slot) -> std::io::Result<&[u8]> {
        let (offset, len) = (slot.offset(), slot.len());
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            let want = self.size.max(len);
            self.buf.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self.file.read_at(&mut self.buf[filled..], offset + filled as u64)? {
                    0 => break,
                    n => filled += n,
                }
            }
            self.buf.truncate(filled);
            self.start = offset;
            if filled < len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the spill file is shorter than its index",
                ));
            }
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }
}

/// Users read back per step of packing, split over the cores: decoding a stored user and
/// serializing its request entry is most of packing's work; the packer only places entries.
const PACK_BATCH: usize = 4096;

/// One user read back and serialized for the packer.
struct ReadyUser {
    entry: batch::UserEntry,
    origin: Origin,
    /// An active user's id and groups (for the groups' memberships).
    groups: Option<(String, Vec<GroupRef>)>,
}

/// Read back and serialize the users of `slots`, in order.
fn prepare(file: &File, slots: &[Slot]) -> std::io::Result<Vec<ReadyUser>> {
    let span = match (slots.first(), slots.last()) {
        (Some(a), Some(b)) => (b.offset() + b.len() as u64).saturating_sub(a.offset()) as usize,
        _ => 0,
    };
    let mut reader = Window::sized(file, span.min(READ_WINDOW));
    slots
        .iter()
        .map(|slot| {
            let user = reader.user(slot)?;
            let groups = (user.active && !user.groups.is_empty())
                .then(|| (user.external_id.clone(), user.groups.clone()));
            Ok(ReadyUser { entry: batch::UserEntry::of(&user), origin: user.origin, groups })
        })
        .collect()
}

/// [`prepare`] split over up to four threads of `crate::compute`'s pool (the results keep the
/// slots' order). Threads started per batch (about 1,250 at 5,000,000 users) each began with
/// an empty allocator heap and left its pages to be purged.
fn prepare_parallel(file: &File, slots: &[Slot]) -> std::io::Result<Vec<ReadyUser>> {
    use rayon::prelude::*;
    let workers = rayon::current_num_threads().min(4);
    if workers < 2 || slots.len() < 256 {
        return prepare(file, slots);
    }
    let parts: Vec<std::io::Result<Vec<ReadyUser>>> =
        slots.par_chunks(slots.len().div_ceil(workers)).map(|part| prepare(file, part)).collect();
    let mut out = Vec::with_capacity(slots.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// The sessions of a spill, packed as the users are read back.
///
/// Users are read back in slot order, a batch at a time (serialized on several threads, see
/// [`PACK_BATCH`]), and fed to one [`batch::Packer`], which is greedy and keeps input order:
/// the sessions are those `batch::pack` gives for the whole pull, and memory holds one batch
/// of entries and the open session's request bodies. The phases mirror
/// `pack`: actives (then their groups, memberships and the movers' removals), then
/// inactives (then the leavers' removals), with a session break between them in `separate`
/// mode, or where the first part ends with groups or removals; group deletes go last.
pub struct Sessions<'a> {
    /// Per slot: send it (`None`: send every slot).
    send: Option<&'a [bool]>,
    /// Deactivations of users not in the spill, packed after the inactive slots.
    extra_deletes: &'a [String],
    spill: &'a Spill,
    mode: SessionMode,
    /// 0: active users; 1: inactive users; 2: done.
    phase: u8,
    cursor: usize,
    packer: Option<batch::Packer>,
    ready: VecDeque<SessionPlan>,
    oversized: Vec<(Oversized, Origin)>,
    groups: Groups,
    removals: &'a GroupRemovals,
    /// Whether the run deactivates anyone or removes leavers' memberships (decided before
    /// packing: group deletes go after those, or after the upserts when there are none).
    has_delete_part: bool,
}

impl Sessions<'_> {
    /// The next session, or `None` when every user is packed.
    pub fn next_session(&mut self) -> std::io::Result<Option<SessionPlan>> {
        loop {
            if let Some(s) = self.ready.pop_front() {
                return Ok(Some(s));
            }
            let Some(packer) = self.packer.as_mut() else { return Ok(None) };
            let want_active = self.phase == 0;
            let index = &self.spill.index;
            // The inactive phase also walks the extra deletes, after the slots.
            let end = index.len() + if want_active { 0 } else { self.extra_deletes.len() };
            while !packer.has_sessions() && self.cursor < end {
                // The next selected slots of this phase, read back and serialized in parallel.
                let mut slots = Vec::new();
                while slots.len() < PACK_BATCH && self.cursor < index.len().min(end) {
                    let at = self.cursor;
                    self.cursor += 1;
                    let slot = index.slot(at);
                    let selected =
                        self.send.is_none_or(|send| send.get(at).copied().unwrap_or(false));
                    if slot.active() == want_active && selected {
                        slots.push(*slot);
                    }
                }
                if slots.is_empty() && self.cursor >= index.len() && self.cursor < end {
                    // A leaver missing from the pull: a deactivation carries only the id.
                    let user = MappedUser {
                        origin: Origin::Index(0),
                        external_id: self.extra_deletes[self.cursor - index.len()].clone(),
                        active: false,
                        profile: BTreeMap::new(),
                        groups: Vec::new(),
                        links: BTreeMap::new(),
                    };
                    self.cursor += 1;
                    if let Some(o) = packer.push_user(&user) {
                        self.oversized.push((o, user.origin));
                    }
                    continue;
                }
                for ready in prepare_parallel(&self.spill.file, &slots)? {
                    if let Some((id, groups)) = &ready.groups {
                        self.groups.add(id, groups);
                    }
                    if let Some(o) = packer.push_user_entry(ready.entry) {
                        self.oversized.push((o, ready.origin));
                    }
                }
            }
            if self.cursor >= end {
                self.end_phase();
            }
            if let Some(packer) = self.packer.as_mut() {
                self.ready.extend(packer.take_sessions());
            }
        }
    }

    /// What follows a phase's users, and the session break after it.
    fn end_phase(&mut self) {
        let Some(mut packer) = self.packer.take() else { return };
        let r = self.removals;
        let group_deletes: Vec<&str> = r.groups.iter().map(String::as_str).collect();
        if self.phase == 0 {
            let movers = by_group(&r.movers);
            let memberships: Vec<(&str, Vec<&str>)> = self
                .groups
                .groups
                .iter()
                .zip(&self.groups.members)
                .map(|(g, m)| (g.external_id.as_str(), m.iter().map(String::as_str).collect()))
                .collect();
            let groups: Vec<&GroupRef> = self.groups.groups.iter().collect();
            packer.end_upserts(&groups, &memberships, &movers);
            // Without a delete part, the group deletes end the first.
            let deletes_here = !self.has_delete_part && !group_deletes.is_empty();
            if deletes_here {
                packer.push_group_deletes(&group_deletes);
            }
            if self.mode == SessionMode::Separate
                || !groups.is_empty()
                || !movers.is_empty()
                || deletes_here
            {
                packer.close_session();
            }
            self.phase = 1;
            self.cursor = 0;
            self.packer = Some(packer);
        } else {
            let leavers = by_group(&r.leavers);
            let later = if self.has_delete_part { group_deletes.as_slice() } else { &[] };
            packer.end_deletes(&leavers, later);
            self.phase = 2;
            self.ready.extend(packer.finish().sessions);
        }
    }

    /// Users too large to send, found so far, with where they came from.
    pub fn take_oversized(&mut self) -> Vec<(Oversized, Origin)> {
        std::mem::take(&mut self.oversized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(i: usize, active: bool, pad: usize) -> MappedUser {
        let mut profile = BTreeMap::new();
        profile.insert("userName".to_string(), format!("user{i}@example.com"));
        profile.insert("title".to_string(), "x".repeat(pad));
        MappedUser {
            origin: Origin::Line(i as u64 + 2),
            external_id: format!("id{i}"),
            active,
            profile,
            groups: Vec::new(),
            links: BTreeMap::new(),
        }
    }

    /// The slot keeps only a check of the content hash and groups fingerprint: a state entry
    /// that matches is answered from memory, anything else gets the exact values from disk.
    #[test]
    fn content_is_compared_by_check_and_read_back_when_it_differs() {
        let mut spill = Spill::new().unwrap();
        let mut users: Vec<MappedUser> = (0..3).map(|i| user(i, true, 10)).collect();
        users[1].groups = vec![GroupRef {
            external_id: "g1".into(),
            display_name: "G1".into(),
            description: None,
        }];
        for u in &users {
            spill.push(u).unwrap();
        }
        spill.finish().unwrap();
        let fp =
            |u: &MappedUser| groups_fingerprint(u.groups.iter().map(|g| g.external_id.as_str()));
        for (i, u) in users.iter().enumerate() {
            let (hash, groups) = (u.content_hash_hex(), fp(u));
            assert_eq!(
                spill.content_against(i, Some(&hash), groups).unwrap(),
                (hash.clone(), groups)
            );
            // A stale hash, none at all, or one that is not hex: the real one, from disk.
            let stale = "0".repeat(32);
            for entry in [Some(stale.as_str()), None, Some("not hex")] {
                assert_eq!(
                    spill.content_against(i, entry, groups).unwrap(),
                    (hash.clone(), groups)
                );
            }
            // Other confirmed groups: the pulled user's fingerprint, from disk.
            assert_eq!(
                spill.content_against(i, Some(&hash), groups ^ 1).unwrap(),
                (hash.clone(), groups)
            );
        }
        assert_ne!(fp(&users[0]), fp(&users[1]));
        let hashes: Vec<String> = users.iter().map(MappedUser::content_hash_hex).collect();
        assert_eq!(spill.content_hashes(&[0, 1, 2]).unwrap(), hashes);
    }

    /// Groups over several chunks: every user, group and membership goes out exactly once,
    /// as packing the whole pull at once would send them, and no user is sent twice because
    /// it is a member in a carried session.
    #[test]
    fn groups_spanning_chunks_are_sent_once_with_every_member() {
        for mode in [SessionMode::Separate, SessionMode::Combined] {
            let users: Vec<MappedUser> = (0..47_000)
                .map(|i| {
                    let mut u = user(i, i % 10 != 0, 0);
                    if u.active {
                        u.groups = vec![GroupRef {
                            external_id: format!("dept{}", i % 7),
                            display_name: format!("Department {}", i % 7),
                            description: None,
                        }];
                    }
                    u
                })
                .collect();
            let mut spill = Spill::new().unwrap();
            for u in &users {
                spill.push(u).unwrap();
            }
            spill.finish().unwrap();
            let mut chunked = Vec::new();
            let mut sessions = spill.sessions(mode, Limits::default());
            while let Some(s) = sessions.next_session().unwrap() {
                chunked.push(s);
            }
            let whole = batch::pack(&users, mode, Limits::default()).sessions;
            let tally = |sessions: &[SessionPlan]| {
                let mut t: BTreeMap<(String, String), usize> = BTreeMap::new();
                for s in sessions {
                    assert!(s.requests.len() <= 50);
                    for r in &s.requests {
                        for id in &r.external_ids {
                            *t.entry((format!("{:?}", r.kind), id.clone())).or_default() += 1;
                        }
                    }
                }
                t
            };
            let (c, w) = (tally(&chunked), tally(&whole));
            assert!(c.values().all(|n| *n == 1), "{mode:?}: an entity was sent twice");
            assert_eq!(c, w, "{mode:?}: chunked packing lost or added entities");
        }
    }

    /// Groups to delete in a run that deactivates nobody end the first part, once; with
    /// deactivations they go after them, once.
    #[test]
    fn group_deletes_are_sent_once_with_or_without_deactivations() {
        for with_leaver in [false, true] {
            let mut spill = Spill::new().unwrap();
            for i in 0..25_000 {
                spill.push(&user(i, true, 10)).unwrap();
            }
            spill.finish().unwrap();
            let removals = GroupRemovals {
                groups: vec!["old1".into(), "old2".into()],
                ..GroupRemovals::default()
            };
            let leavers = if with_leaver { vec!["gone".to_string()] } else { Vec::new() };
            for mode in [SessionMode::Separate, SessionMode::Combined] {
                let mut s =
                    spill.sessions_selected(mode, Limits::default(), None, &leavers, &removals);
                let mut kinds = Vec::new();
                while let Some(plan) = s.next_session().unwrap() {
                    for r in plan.requests {
                        kinds.push((r.kind, r.external_ids));
                    }
                }
                let deletes: Vec<&Vec<String>> = kinds
                    .iter()
                    .filter(|(k, _)| *k == batch::RequestKind::GroupsDelete)
                    .map(|(_, ids)| ids)
                    .collect();
                assert_eq!(deletes, [&vec!["old1".to_string(), "old2".to_string()]], "{mode:?}");
                assert_eq!(kinds.last().unwrap().0, batch::RequestKind::GroupsDelete, "last");
                let users: usize =
                    kinds.iter().filter(|(k, _)| k.is_users()).map(|(_, ids)| ids.len()).sum();
                assert_eq!(users, 25_000 + leavers.len());
            }
        }
    }

    /// Chunked packing must give exactly what packing everything at once gives.
    #[test]
    fn chunked_packing_equals_whole_packing() {
        for mode in [SessionMode::Separate, SessionMode::Combined] {
            // Varied sizes so that sessions end on the byte limit, not only on the user count.
            let users: Vec<MappedUser> =
                (0..95_000).map(|i| user(i, i % 7 != 0, (i * 37) % 900)).collect();
            let mut spill = Spill::new().unwrap();
            for u in &users {
                assert!(spill.push(u).unwrap().is_none());
            }
            spill.finish().unwrap();
            let whole = batch::pack(&users, mode, Limits::default());
            let mut chunked = Vec::new();
            let mut s = spill.sessions(mode, Limits::default());
            while let Some(plan) = s.next_session().unwrap() {
                chunked.push(plan);
            }
            assert_eq!(chunked.len(), whole.sessions.len(), "{mode:?}");
            assert!(chunked == whole.sessions, "{mode:?}: sessions differ");
        }
    }

    #[test]
    fn duplicates_keep_first_position_and_last_version() {
        let mut spill = Spill::new().unwrap();
        spill.push(&user(1, true, 1)).unwrap();
        spill.push(&user(2, true, 1)).unwrap();
        let mut newer = user(1, false, 3);
        newer.origin = Origin::Line(99);
        assert_eq!(spill.push(&newer).unwrap(), Some(Origin::Line(3)));
        spill.finish().unwrap();
        let back: Vec<MappedUser> = spill.iter().map(Result::unwrap).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], newer);
        assert_eq!(back[1], user(2, true, 1));
        assert_eq!(spill.counts(), (1, 1));
    }

    /// Two ids under one key (forced here: SipHash-128 will not give one) are never merged:
    /// the id on disk is compared, and the pull stops with both named.
    #[test]
    fn two_ids_sharing_a_key_stop_the_pull_instead_of_merging() {
        let mut spill = Spill::new().unwrap();
        let h = spill.hasher();
        let first = Encoded::new(&user(1, true, 5), &h).unwrap();
        let mut second = Encoded::new(&user(2, true, 5), &h).unwrap();
        second.key = first.key;
        assert_eq!(spill.push_encoded(&first).unwrap(), None);
        let e = spill.push_encoded(&second).unwrap_err().to_string();
        assert!(e.contains("`id1` and `id2` share a 128-bit index key"), "{e}");
        // The same id again is a duplicate, as ever.
        let again = Encoded::new(&user(1, false, 7), &h).unwrap();
        assert_eq!(spill.push_encoded(&again).unwrap(), Some(Origin::Line(3)));
        spill.finish().unwrap();
        let ids: Vec<String> = spill.ids().map(Result::unwrap).collect();
        assert_eq!(ids, ["id1"]);
    }

    /// A duplicate's older origin is read back from the file, wherever the older version is:
    /// still in the writer's buffer, or long written.
    #[test]
    fn every_duplicate_hands_back_the_origin_it_replaces() {
        let mut spill = Spill::new().unwrap();
        for i in 0..3_000 {
            assert_eq!(spill.push(&user(i, true, 40)).unwrap(), None);
        }
        for round in 1..=2u64 {
            for i in (0..3_000).rev().step_by(7) {
                let mut again = user(i, i % 2 == 0, 40);
                again.origin = Origin::Index(round * 10_000 + i as u64);
                let before = if round == 1 {
                    Origin::Line(i as u64 + 2)
                } else {
                    Origin::Index(10_000 + i as u64)
                };
                assert_eq!(spill.push(&again).unwrap(), Some(before), "user {i}, round {round}");
            }
        }
        spill.finish().unwrap();
        assert_eq!(spill.len(), 3_000);
        let back: Vec<MappedUser> = spill.iter().map(Result::unwrap).collect();
        assert_eq!(back[2_999].origin, Origin::Index(20_000 + 2_999));
        assert_eq!(back[1].origin, Origin::Line(3), "never duplicated");
    }
}
