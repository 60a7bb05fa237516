//! The in-memory part of a [`super::Spill`]: per distinct user, where its latest version lies
//! in the file and what the delta compares, plus the externalId index. It is what a pull holds
//! per person, so every part is fixed-size (ARCHITECTURE.md, "Memory per person"):
//!
//! - a [`Slot`] of 32 bytes: file position and length, the externalId's 128-bit key, and a
//!   64-bit check of the content hash and groups fingerprint (the id, the record's origin,
//!   and the content hash and fingerprint themselves are on disk, read back when needed);
//! - 4 bytes (and a control byte) in a `hashbrown` table of slot numbers, filed under the
//!   key's low 64 bits and compared on all 128.
//!
//! The key is SipHash-1-3 with a 128-bit output, keyed at random per process ([`IdHasher`]):
//! no input can be crafted to collide, and two of five million ids share a key with a
//! probability of about 10⁻²⁶. A duplicate is still checked against the id on disk (the spill
//! reads the older record back anyway, for its origin), so even that cannot merge two people
//! silently.
//!
//! Slots are kept in chunks, so growing never copies them or holds two copies at once.

use std::alloc::System;
use std::hash::Hasher;

use allocator_api2::vec::Vec as SysVec;
use hashbrown::HashTable;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::mapping::HASH_BYTES;

/// Slots per chunk (32 bytes each: 512 KiB).
const SLOT_CHUNK: usize = 1 << 14;

/// The externalId key of the index: SipHash-1-3, 128 bits, keyed at random per process.
/// Copied to the mapping workers, which key ids as they encode them.
#[derive(Debug, Clone, Copy)]
pub struct IdHasher {
    k0: u64,
    k1: u64,
}

impl Default for IdHasher {
    fn default() -> Self {
        Self { k0: rand::random(), k1: rand::random() }
    }
}

impl IdHasher {
    /// The key of `id`.
    pub fn key(&self, id: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(id.as_bytes());
        h.finish128().as_u128()
    }
}

/// Where the latest version of one user lies in the file, and what the delta compares.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// `offset << 24 | len << 1 | active`: offsets up to 1 TiB, records up to 8 MiB.
    loc: u64,
    /// The key of the externalId ([`IdHasher::key`]).
    key: u128,
    /// [`check`] of the user's content hash and groups fingerprint.
    check: u64,
}

/// 64 bits that are equal when a user's content hash
/// ([`crate::mapping::MappedUser::content_hash`]) and groups fingerprint
/// ([`crate::mapping::groups_fingerprint`]) both are, and differ otherwise but for a chance
/// of 2⁻⁶⁴: what the delta compares a state entry with before it reads the exact values
/// back from the file. Only compared within one process, never stored.
pub fn check(hash: &[u8; HASH_BYTES], groups: u64) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(hash);
    h.write_u64(groups);
    h.finish()
}

const MAX_OFFSET: u64 = 1 << 40;
const MAX_LEN: u64 = 1 << 23;

impl Slot {
    /// A slot for a record of `len` bytes at `offset`; its key is set by [`Index::put`].
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
        Ok(Self {
            loc: offset << 24 | len << 1 | u64::from(active),
            key: 0,
            check: check(&hash, groups),
        })
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

    /// Whether this user's content hash and groups fingerprint may be `hash` and `groups`:
    /// `false` means they certainly differ.
    pub fn may_match(&self, hash: &[u8; HASH_BYTES], groups: u64) -> bool {
        self.check == check(hash, groups)
    }
}

/// Distinct users in first-seen order, by the key of their externalId.
#[derive(Default)]
pub struct Index {
    hasher: IdHasher,
    /// The table and the chunks live in the system allocator: they are few, large and long
    /// lived, which glibc maps straight from the OS, where mimalloc (tuned for the pull's
    /// millions of small short-lived strings) kept about 30 bytes per person more resident.
    table: HashTable<u32, System>,
    slots: Vec<SysVec<Slot, System>>,
    len: usize,
}

impl Index {
    /// The hasher keys are made with (a copy, for another thread).
    pub fn hasher(&self) -> IdHasher {
        self.hasher
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

    /// The slot of the id whose key is `key`.
    pub fn find(&self, key: u128) -> Option<usize> {
        let slots = &self.slots;
        self.table.find(key as u64, |&i| slot_at(slots, i as usize).key == key).map(|&i| i as usize)
    }

    /// The slot of `id`.
    pub fn get(&self, id: &str) -> Option<usize> {
        self.find(self.hasher.key(id))
    }

    /// Put `slot` at place `i` (found by [`Self::find`]; its first-seen position is kept) and
    /// return the slot it replaces.
    pub fn replace(&mut self, i: usize, mut slot: Slot) -> Slot {
        let place = &mut self.slots[i / SLOT_CHUNK][i % SLOT_CHUNK];
        slot.key = place.key;
        std::mem::replace(place, slot)
    }

    /// Append `slot` for a key [`Self::find`] did not find.
    pub fn push(&mut self, key: u128, mut slot: Slot) -> std::io::Result<()> {
        slot.key = key;
        let i = u32::try_from(self.len)
            .map_err(|_| std::io::Error::other("a pull holds at most 4,294,967,295 users"))?;
        if self.len.is_multiple_of(SLOT_CHUNK) {
            self.slots.push(SysVec::with_capacity_in(SLOT_CHUNK, System));
        }
        if let Some(chunk) = self.slots.last_mut() {
            chunk.push(slot);
        }
        self.len += 1;
        let slots = &self.slots;
        self.table.insert_unique(key as u64, i, |&j| slot_at(slots, j as usize).key as u64);
        Ok(())
    }

    /// Free the table (the slots stay, in order): nothing is found by id after.
    pub fn forget_ids(&mut self) {
        self.table = HashTable::new_in(System);
    }
}

fn slot_at(slots: &[SysVec<Slot, System>], i: usize) -> &Slot {
    &slots[i / SLOT_CHUNK][i % SLOT_CHUNK]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(offset: u64, len: usize, active: bool) -> Slot {
        Slot::new(offset, len, active, [7; HASH_BYTES], 9).unwrap()
    }

    #[test]
    fn a_slot_packs_and_unpacks_every_field() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        let s = slot((1 << 40) - 1, (1 << 23) - 1, true);
        assert_eq!((s.offset(), s.len(), s.active()), ((1 << 40) - 1, (1 << 23) - 1, true));
        assert!(s.may_match(&[7; HASH_BYTES], 9));
        let mut other = [7; HASH_BYTES];
        other[HASH_BYTES - 1] = 8;
        assert!(!s.may_match(&other, 9), "the last byte of the hash counts");
        assert!(!s.may_match(&[7; HASH_BYTES], 10), "the groups count");
        let s = slot(0, 0, false);
        assert_eq!((s.offset(), s.len(), s.active()), (0, 0, false));
        let err = Slot::new(0, 1 << 23, true, [0; HASH_BYTES], 0).unwrap_err();
        assert!(err.to_string().contains("8 MiB"), "{err}");
        assert!(Slot::new(1 << 40, 1, true, [0; HASH_BYTES], 0).is_err());
    }

    #[test]
    fn ids_are_found_by_key_across_chunks_and_growth() {
        let mut index = Index::default();
        let h = index.hasher();
        // Enough ids, of varied length, to fill several slot chunks and grow the table.
        let ids: Vec<String> =
            (0..70_000).map(|i| format!("{i}-{}", "é".repeat(i % 300))).collect();
        for (i, id) in ids.iter().enumerate() {
            let s = slot(i as u64, 1, true);
            assert_eq!(index.find(h.key(id)), None);
            index.push(h.key(id), s).unwrap();
        }
        assert!(index.slots.len() > 3);
        for (i, id) in ids.iter().enumerate().step_by(997) {
            assert_eq!(index.get(id), Some(i));
        }
        assert_eq!(index.get("70000-"), None);
        assert_eq!(index.get(&ids[5][..ids[5].len() - 2]), None, "a prefix is another id");
        // A duplicate keeps its place and hands back the slot it replaces.
        let newer = slot(1, 2, false);
        let old = index.replace(index.find(h.key(&ids[3])).unwrap(), newer);
        assert_eq!((old.offset(), old.active()), (3, true));
        assert_eq!(index.len(), ids.len());
        assert_eq!((index.slot(3).offset(), index.slot(3).active()), (1, false));
        // Keys differ per process (per hasher), and are stable within one.
        assert_ne!(IdHasher::default().key(&ids[0]), h.key(&ids[0]));
        assert_eq!(h.key(&ids[0]), index.hasher().key(&ids[0]));
        index.forget_ids();
        assert_eq!(index.get(&ids[0]), None);
        assert_eq!(index.slots().count(), ids.len());
    }
}
