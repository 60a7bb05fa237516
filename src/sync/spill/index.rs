//! The in-memory part of a [`super::Spill`]: per distinct user, where its latest version lies
//! in the file and what the delta compares, plus the externalId index. It is what a pull holds
//! per person, so every part is fixed-size or packed (ARCHITECTURE.md, "Memory per person"):
//!
//! - a [`Slot`] of 40 bytes: file position and length, content hash, groups fingerprint, and
//!   where its externalId lies in the arena (the origin, needed only for a duplicate, is read
//!   back from the file);
//! - the externalId itself, once, in an append-only arena of 1 MiB chunks (no `String`
//!   header, no allocator overhead, and no copy when it grows);
//! - 4 bytes (and a control byte) in a `hashbrown` table of slot numbers, which hashes the
//!   id from the arena and compares it exactly, so two ids never share a slot.
//!
//! Slots are kept in chunks too, so growing never copies them or holds two copies at once.

use std::hash::BuildHasher;

use std::alloc::System;

use allocator_api2::vec::Vec as SysVec;
use hashbrown::HashTable;

use crate::mapping::HASH_BYTES;

/// Bytes per arena chunk; an externalId (at most 512 characters) never spans two.
const ARENA_CHUNK: usize = 1 << 20;
/// Slots per chunk (40 bytes each: 640 KiB).
const SLOT_CHUNK: usize = 1 << 14;

/// The hasher of the index: keyed at random per process, so no input can be crafted to
/// collide. Cheap to clone (two words), so mapping workers hash ids as they encode them.
pub type IdHasher = std::hash::RandomState;

/// Where the latest version of one user lies in the file, and what the delta compares.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// `offset << 24 | len << 1 | active`: offsets up to 1 TiB, records up to 8 MiB.
    loc: u64,
    /// `position << 16 | len` of the externalId in the arena.
    id: u64,
    /// [`crate::mapping::MappedUser::content_hash`] of the user.
    pub hash: [u8; HASH_BYTES],
    /// [`crate::mapping::groups_fingerprint`] of the user's groups.
    pub groups: u64,
}

const MAX_OFFSET: u64 = 1 << 40;
const MAX_LEN: u64 = 1 << 23;

impl Slot {
    /// A slot for a record of `len` bytes at `offset`; its id is set by [`Index::insert`].
    pub fn new(
        offset: u64,
        len: usize,
        active: bool,
        hash: [u8; HASH_BYTES],
        groups: u64,
    ) -> std::io::Result<Self> {
        let len = len as u64;
        if len >= MAX_LEN {
            return Err(std::io::Error::other(format!(
                "one user's record is {len} bytes once encoded, over the 8 MiB a spill slot holds"
            )));
        }
        if offset >= MAX_OFFSET {
            return Err(std::io::Error::other("the spill file grew over 1 TiB"));
        }
        Ok(Self { loc: offset << 24 | len << 1 | u64::from(active), id: 0, hash, groups })
    }

    pub fn offset(&self) -> u64 {
        self.loc >> 24
    }

    pub fn len(&self) -> usize {
        ((self.loc >> 1) & (MAX_LEN - 1)) as usize
    }

    pub fn active(&self) -> bool {
        self.loc & 1 == 1
    }
}

/// Distinct users in first-seen order, and their externalIds.
#[derive(Default)]
pub struct Index {
    hasher: IdHasher,
    /// The table and the chunks live in the system allocator: they are few, large and long
    /// lived, which glibc maps straight from the OS, where mimalloc (tuned for the pull's
    /// millions of small short-lived strings) kept about 30 bytes per person more resident.
    table: HashTable<u32, System>,
    arena: Vec<SysVec<u8, System>>,
    slots: Vec<SysVec<Slot, System>>,
    len: usize,
}

impl Index {
    /// A clone of the hasher, for [`Self::hash`] on another thread.
    pub fn hasher(&self) -> IdHasher {
        self.hasher.clone()
    }

    /// The hash the table files `id` under (computed with [`Self::hasher`]).
    pub fn hash(hasher: &IdHasher, id: &str) -> u64 {
        hasher.hash_one(id)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i / SLOT_CHUNK][i % SLOT_CHUNK]
    }

    /// Every slot, in first-seen order.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter().flatten()
    }

    /// The externalId of slot `i` (empty once [`Self::forget_ids`] ran).
    pub fn id(&self, i: usize) -> &str {
        id_at(&self.arena, self.slot(i).id)
    }

    /// The slot of `id`, whose hash is `hash`.
    pub fn find(&self, id: &str, hash: u64) -> Option<usize> {
        let (arena, slots) = (&self.arena, &self.slots);
        self.table
            .find(hash, |&i| id_at(arena, slot_at(slots, i as usize).id) == id)
            .map(|&i| i as usize)
    }

    /// The slot of `id`.
    pub fn get(&self, id: &str) -> Option<usize> {
        self.find(id, Self::hash(&self.hasher, id))
    }

    /// Put `slot` at `id`'s place: the old slot is returned when `id` had one (its first-seen
    /// position is kept), else the slot is appended.
    pub fn put(&mut self, id: &str, hash: u64, mut slot: Slot) -> std::io::Result<Option<Slot>> {
        if let Some(i) = self.find(id, hash) {
            let place = &mut self.slots[i / SLOT_CHUNK][i % SLOT_CHUNK];
            slot.id = place.id;
            return Ok(Some(std::mem::replace(place, slot)));
        }
        let i = u32::try_from(self.len)
            .map_err(|_| std::io::Error::other("a pull holds at most 4,294,967,295 users"))?;
        slot.id = self.store_id(id)?;
        if self.len.is_multiple_of(SLOT_CHUNK) {
            self.slots.push(SysVec::with_capacity_in(SLOT_CHUNK, System));
        }
        if let Some(chunk) = self.slots.last_mut() {
            chunk.push(slot);
        }
        self.len += 1;
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        self.table.insert_unique(hash, i, |&j| {
            hasher.hash_one(id_at(arena, slot_at(slots, j as usize).id))
        });
        Ok(None)
    }

    fn store_id(&mut self, id: &str) -> std::io::Result<u64> {
        let len = id.len();
        if len >= 1 << 16 {
            return Err(std::io::Error::other("an externalId is over 64 KiB"));
        }
        let fits = self.arena.last().is_some_and(|c| ARENA_CHUNK - c.len() >= len);
        if !fits {
            self.arena.push(SysVec::with_capacity_in(ARENA_CHUNK, System));
        }
        let chunk_no = self.arena.len() - 1;
        let chunk = &mut self.arena[chunk_no];
        let at = chunk.len();
        chunk.extend_from_slice(id.as_bytes());
        // 28 bits of chunk number and 20 of position in the chunk, then 16 of length.
        let position = ((chunk_no as u64) << 20) | at as u64;
        Ok(position << 16 | len as u64)
    }

    /// Free the table and the ids, keeping the slots.
    pub fn forget_ids(&mut self) {
        self.table = HashTable::new_in(System);
        self.arena = Vec::new();
    }

    /// Whether the ids were forgotten.
    pub fn forgotten(&self) -> bool {
        self.arena.is_empty() && self.len > 0
    }
}

fn slot_at(slots: &[SysVec<Slot, System>], i: usize) -> &Slot {
    &slots[i / SLOT_CHUNK][i % SLOT_CHUNK]
}

fn id_at(arena: &[SysVec<u8, System>], id: u64) -> &str {
    let len = (id & 0xffff) as usize;
    let position = id >> 16;
    let (chunk, at) = ((position >> 20) as usize, (position & (ARENA_CHUNK as u64 - 1)) as usize);
    // Only whole `&str`s are stored, so the bytes are UTF-8; forgotten ids read as "".
    let bytes = arena.get(chunk).and_then(|c| c.get(at..at + len)).unwrap_or_default();
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(offset: u64, len: usize, active: bool) -> Slot {
        Slot::new(offset, len, active, [7; HASH_BYTES], 9).unwrap()
    }

    #[test]
    fn a_slot_packs_and_unpacks_every_field() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        let s = slot((1 << 40) - 1, (1 << 23) - 1, true);
        assert_eq!((s.offset(), s.len(), s.active()), ((1 << 40) - 1, (1 << 23) - 1, true));
        assert_eq!((s.hash, s.groups), ([7; HASH_BYTES], 9));
        let s = slot(0, 0, false);
        assert_eq!((s.offset(), s.len(), s.active()), (0, 0, false));
        let err = Slot::new(0, 1 << 23, true, [0; HASH_BYTES], 0).unwrap_err();
        assert!(err.to_string().contains("8 MiB"), "{err}");
        assert!(Slot::new(1 << 40, 1, true, [0; HASH_BYTES], 0).is_err());
    }

    #[test]
    fn ids_are_found_exactly_across_chunks_and_growth() {
        let mut index = Index::default();
        let h = index.hasher();
        // Enough ids, of varied length, to fill several arena and slot chunks.
        let ids: Vec<String> =
            (0..70_000).map(|i| format!("{i}-{}", "é".repeat(i % 300))).collect();
        for (i, id) in ids.iter().enumerate() {
            let s = slot(i as u64, 1, true);
            assert!(index.put(id, Index::hash(&h, id), s).unwrap().is_none());
        }
        assert!(index.arena.len() > 3 && index.slots.len() > 3);
        for (i, id) in ids.iter().enumerate().step_by(997) {
            assert_eq!(index.get(id), Some(i));
            assert_eq!(index.id(i), id);
        }
        assert_eq!(index.get("70000-"), None);
        assert_eq!(index.get(&ids[5][..ids[5].len() - 2]), None, "a prefix is another id");
        // A duplicate keeps its place and its id, and hands back the slot it replaces.
        let newer = slot(1, 2, false);
        let old = index.put(&ids[3], Index::hash(&h, &ids[3]), newer).unwrap().unwrap();
        assert_eq!((old.offset(), old.active()), (3, true));
        assert_eq!((index.len(), index.id(3)), (ids.len(), ids[3].as_str()));
        assert_eq!((index.slot(3).offset(), index.slot(3).active()), (1, false));
        index.forget_ids();
        assert!(index.forgotten());
        assert_eq!(index.slots().count(), ids.len());
    }
}
