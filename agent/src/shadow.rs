//! Shadow variables (kpatch's model): extra fields a patch attaches to any object by its address,
//! so a fix can add state without changing the object's layout.
//!
//! A block is keyed by (object address, id). Patched code looks blocks up on its hot path from many
//! threads, so the table is split into [`SHARDS`] shards, each behind its own `RwLock` and chosen
//! by a hash of the key: two threads contend only when their keys fall in the same shard, and a
//! lookup takes only that shard's read lock. Blocks are separate heap allocations the maps only
//! point to, so a block never moves while it is allocated, whatever the maps do.
//!
//! The FFI exports (`hotagent_shadow_*`) are in `sys::shadow_ffi`; everything here is safe code.

use std::collections::HashMap;
use std::ffi::c_void;
use std::hash::{BuildHasher, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How many shards the table has (a power of two).
pub const SHARDS: usize = 64;

/// The alignment of every block: what `malloc` promises on x86-64, so any C type fits.
pub const ALIGN: usize = 16;

/// 16 bytes, 16-aligned. Atomics rather than plain bytes: C code writes the block through the
/// pointer it is given while the table holds it, which needs interior mutability to be sound,
/// and atomics have it without any `unsafe`.
#[repr(C, align(16))]
#[derive(Default)]
struct Chunk([AtomicU64; 2]);

const _: () = assert!(std::mem::size_of::<Chunk>() == ALIGN);
const _: () = assert!(std::mem::align_of::<Chunk>() == ALIGN);

/// One zeroed block. A `Vec` (not a `Box`) on purpose: moving it around in a map does not assert
/// unique access to its heap buffer, which C code holds a pointer into.
struct Block(Vec<Chunk>);

impl Block {
    /// A zeroed block of at least `size` bytes; `None` when `size` is 0 or the memory cannot be
    /// had (never aborts: the target's allocator saying no is not a reason to kill the target).
    fn zeroed(size: usize) -> Option<Block> {
        if size == 0 {
            return None;
        }
        let chunks = size.div_ceil(ALIGN);
        let mut v = Vec::new();
        v.try_reserve_exact(chunks).ok()?;
        v.resize_with(chunks, Chunk::default);
        Some(Block(v))
    }

    fn ptr(&self) -> NonNull<c_void> {
        // A non-empty Vec's buffer pointer is never null.
        NonNull::new(self.0.as_ptr().cast_mut().cast()).unwrap_or(NonNull::dangling())
    }
}

/// (object address, id).
type Key = (usize, u64);

/// A cheap, well-mixed hash of a key (SplitMix64's finaliser). Keys are addresses and small ids
/// chosen by patches, not by whoever the target talks to: no need for SipHash's keyed defence.
fn mix(key: Key) -> u64 {
    let mut z = (key.0 as u64) ^ key.1.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The maps' hasher: feeds the key's two words to [`mix`].
#[derive(Default)]
struct KeyHasher {
    words: [u64; 2],
    n: usize,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix((self.words[0] as usize, self.words[1]))
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for key types other than (usize, u64); fold the bytes in.
        for b in bytes {
            self.words[1] = self.words[1].rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.words[self.n % 2] ^= v;
        self.n += 1;
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

#[derive(Default, Clone, Copy)]
struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

type Map = HashMap<Key, Block, KeyHash>;
type Shard = RwLock<Map>;

/// Every shard's write lock, taken just before a `fork` and released in the parent and the child
/// after it: a lock another thread held at the fork would stay held forever in the child, where
/// that thread does not exist, and the child's next shadow call on that shard would hang.
pub struct Frozen<'a>(#[allow(dead_code)] [RwLockWriteGuard<'a, Map>; SHARDS]);

/// A table of shadow blocks. The agent has one ([`global`]); tests make their own.
pub struct Table {
    shards: [Shard; SHARDS],
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table (no allocation until the first block).
    pub const fn new() -> Table {
        Table {
            shards: [const { RwLock::new(HashMap::with_hasher(KeyHash)) }; SHARDS],
        }
    }

    fn shard(&self, key: Key) -> &Shard {
        // The high bits: the maps inside use the low ones for their buckets.
        &self.shards[(mix(key) >> 58) as usize % SHARDS]
    }

    // A panic while a lock was held (only an allocation failure the maps could not report) left
    // the map itself consistent: go on with it rather than fail every later call.
    fn read(shard: &Shard) -> RwLockReadGuard<'_, Map> {
        shard.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(shard: &Shard) -> RwLockWriteGuard<'_, Map> {
        shard.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every shard's write lock, in order, until the result is dropped (see [`Frozen`]).
    /// Each is held only for a lookup or a change elsewhere, so this waits microseconds.
    pub fn freeze(&self) -> Frozen<'_> {
        Frozen(std::array::from_fn(|i| Self::write(&self.shards[i])))
    }

    /// The block of (object, id), if any.
    pub fn get(&self, object: usize, id: u64) -> Option<NonNull<c_void>> {
        let key = (object, id);
        Self::read(self.shard(key)).get(&key).map(Block::ptr)
    }

    /// The block of (object, id), made zeroed with `size` bytes (16-aligned) if there is none;
    /// `size` is ignored when the block exists. `None` only when a block had to be made and `size`
    /// is 0 or the memory cannot be had. Threads racing for the same key all get one block.
    pub fn get_or_alloc(&self, object: usize, id: u64, size: usize) -> Option<NonNull<c_void>> {
        let key = (object, id);
        let shard = self.shard(key);
        if let Some(p) = Self::read(shard).get(&key).map(Block::ptr) {
            return Some(p);
        }
        // Allocated (and zeroed) outside the lock; a thread that won the race meanwhile keeps
        // its block and ours is dropped.
        let fresh = Block::zeroed(size);
        let mut map = Self::write(shard);
        if let Some(existing) = map.get(&key) {
            return Some(existing.ptr());
        }
        let fresh = fresh?;
        map.try_reserve(1).ok()?;
        Some(map.entry(key).or_insert(fresh).ptr())
    }

    /// Frees the block of (object, id); nothing happens when there is none.
    pub fn free(&self, object: usize, id: u64) {
        let key = (object, id);
        let removed = Self::write(self.shard(key)).remove(&key);
        // Freed after the lock is released.
        drop(removed);
    }

    /// Frees the blocks of every object for `id`, shard by shard.
    pub fn free_all(&self, id: u64) {
        for shard in &self.shards {
            Self::write(shard).retain(|key, _| key.1 != id);
        }
    }

    /// How many blocks are allocated.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::read(s).len()).sum()
    }

    /// Whether no block is allocated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The agent's table, behind the `hotagent_shadow_*` exports.
pub fn global() -> &'static Table {
    static GLOBAL: Table = Table::new();
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    fn addr(p: NonNull<c_void>) -> usize {
        p.as_ptr() as usize
    }

    #[test]
    fn absent_until_allocated_then_same_block() {
        let t = Table::new();
        assert!(t.get(0x1000, 7).is_none());
        let a = t.get_or_alloc(0x1000, 7, 24).expect("a block");
        assert_eq!(addr(a) % ALIGN, 0, "16-aligned");
        assert_eq!(t.get(0x1000, 7), Some(a));
        // An existing block is returned whatever size is asked now.
        assert_eq!(t.get_or_alloc(0x1000, 7, 4096), Some(a));
        assert_eq!(t.get_or_alloc(0x1000, 7, 0), Some(a));
        // Another id or another object is another block.
        let b = t.get_or_alloc(0x1000, 8, 24).expect("a block");
        let c = t.get_or_alloc(0x1008, 7, 24).expect("a block");
        assert!(a != b && a != c && b != c);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn blocks_start_zeroed_and_keep_their_contents() {
        let t = Table::new();
        let p = t.get_or_alloc(1, 1, 33).expect("a block");
        let words = Block::zeroed(33).map(|b| b.0.len());
        assert_eq!(words, Some(3), "33 bytes round up to three 16-byte chunks");
        let block = t.get(1, 1).expect("present");
        assert_eq!(block, p);
        // Its storage, read through the table's own view: all zero.
        let map = Table::read(t.shard((1, 1)));
        let b = map.get(&(1, 1)).expect("present");
        assert!(b.0.iter().all(|c| c
            .0
            .iter()
            .all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0)));
    }

    #[test]
    fn zero_size_and_impossible_sizes_give_none_without_aborting() {
        let t = Table::new();
        assert!(t.get_or_alloc(5, 1, 0).is_none());
        assert!(t.get_or_alloc(5, 1, usize::MAX).is_none());
        assert!(t.get_or_alloc(5, 1, usize::MAX / 2).is_none());
        assert!(t.is_empty());
        assert!(t.get(5, 1).is_none());
    }

    #[test]
    fn free_removes_one_block_and_a_later_alloc_is_fresh() {
        let t = Table::new();
        t.get_or_alloc(10, 1, 16).expect("a block");
        t.get_or_alloc(10, 2, 16).expect("a block");
        t.free(10, 1);
        assert!(t.get(10, 1).is_none());
        assert!(t.get(10, 2).is_some(), "the other id stays");
        t.free(10, 1); // absent: a no-op
        t.free(999, 3);
        assert!(t.get_or_alloc(10, 1, 16).is_some());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn free_all_frees_every_object_of_one_id_only() {
        let t = Table::new();
        for obj in 0..1000usize {
            t.get_or_alloc(obj * 64, 42, 8).expect("a block");
            t.get_or_alloc(obj * 64, 43, 8).expect("a block");
        }
        t.free_all(42);
        assert_eq!(t.len(), 1000);
        assert!((0..1000usize).all(|o| t.get(o * 64, 42).is_none()));
        assert!((0..1000usize).all(|o| t.get(o * 64, 43).is_some()));
    }

    #[test]
    fn freeze_holds_every_shard_until_dropped() {
        let t = Table::new();
        t.get_or_alloc(1, 1, 8).expect("a block");
        let frozen = t.freeze();
        assert!(t.shards.iter().all(|s| s.try_read().is_err()));
        drop(frozen);
        assert!(t.shards.iter().all(|s| s.try_write().is_ok()));
        assert!(t.get(1, 1).is_some());
    }

    #[test]
    fn keys_spread_over_the_shards() {
        // Objects 16 bytes apart (malloc's spacing) must not all land in one shard.
        let used: HashSet<usize> = (0..4096usize)
            .map(|o| (mix((0x5555_0000 + o * 16, 1)) >> 58) as usize % SHARDS)
            .collect();
        assert_eq!(used.len(), SHARDS);
    }

    #[test]
    fn eight_threads_racing_on_the_same_keys_get_one_block_each() {
        const THREADS: usize = 8;
        const KEYS: usize = 512;
        let t = Arc::new(Table::new());
        let start = Arc::new(Barrier::new(THREADS));
        // Every thread is started before any is joined: they meet at the barrier.
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let t = Arc::clone(&t);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut mine = vec![0usize; KEYS];
                    for round in 0..20 {
                        for (k, slot) in mine.iter_mut().enumerate() {
                            let p = addr(t.get_or_alloc(k * 16, 9, 16 + round).expect("a block"));
                            assert!(*slot == 0 || *slot == p, "block of key {k} moved");
                            *slot = p;
                        }
                    }
                    mine
                })
            })
            .collect();
        let seen: Vec<Vec<usize>> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        for k in 0..KEYS {
            assert!(
                seen.iter().all(|s| s[k] == seen[0][k]),
                "key {k}: two blocks"
            );
        }
        let distinct: HashSet<usize> = seen[0].iter().copied().collect();
        assert_eq!(distinct.len(), KEYS, "two keys share a block");
        assert_eq!(t.len(), KEYS);
    }
}
