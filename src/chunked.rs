//! Storage that grows in chunks instead of by reallocation: a nursery of a
//! million children never copies its children around, never holds twice the
//! memory it needs while growing, and a nursery of three children allocates
//! little.
//!
//! # Invariants
//!
//! 1. Index `i` lives in chunk `locate(i).0` at offset `locate(i).1`; chunk
//!    `k` is allocated with exactly `capacity(k)` slots and never grows, so an
//!    element never moves once pushed.
//! 2. The chunk sizes are 16, 16, 32, …, 1024, then 1024 forever: small sets
//!    stay small, and a large one wastes at most one partly filled chunk.
//! 3. `ChunkSlab`'s vacant entries form a free list through `Entry::Vacant`,
//!    headed by `next`; `next == entries.len()` means "push a new entry".
//! 4. `spare` holds empty chunks given for reuse (`reuse`), the one for the
//!    next chunk index last; one of too small a capacity is dropped, not
//!    used, so chunk `k` still never grows.

/// Where index `i` lives: (chunk, offset in the chunk).
#[inline]
fn locate(i: usize) -> (usize, usize) {
    // Most keys of a large set are in the chunks of 1024: tested first.
    if i >= 2048 {
        (6 + (i >> 10), i & 1023)
    } else if i >= 16 {
        let k = (i.ilog2() - 3) as usize;
        (k, i - (8 << k))
    } else {
        (0, i)
    }
}

/// How many slots chunk `k` holds.
fn capacity(k: usize) -> usize {
    match k {
        0 => 16,
        1..=7 => 8 << k,
        _ => 1024,
    }
}

/// A vector that grows by whole chunks (invariant 1).
pub(crate) struct ChunkVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
    /// Invariant 4.
    spare: Vec<Vec<T>>,
}

impl<T> Default for ChunkVec<T> {
    fn default() -> Self {
        ChunkVec {
            chunks: Vec::new(),
            len: 0,
            spare: Vec::new(),
        }
    }
}

/// The memory of empty chunks of `T`, as chunks of `U`, without allocating
/// (std's in-place `collect` keeps a buffer whose element size and alignment
/// do not change). Empty if the two layouts differ. This is how a nursery's
/// chunks outlive it, for its thread's next nursery, whatever the lifetime
/// of the futures they held.
pub(crate) fn convert<T, U>(chunks: Vec<Vec<T>>) -> Vec<Vec<U>> {
    if size_of::<T>() != size_of::<U>() || align_of::<T>() != align_of::<U>() {
        return Vec::new();
    }
    chunks.into_iter().map(recast::<T, U>).collect()
}

/// The memory of `v`, emptied, as a vector of `U` (see `convert`); a new
/// empty vector if the layouts differ.
pub(crate) fn recast<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    if size_of::<T>() != size_of::<U>() || align_of::<T>() != align_of::<U>() {
        return Vec::new();
    }
    v.into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

impl<T> ChunkVec<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        let (k, _) = locate(self.len);
        if k == self.chunks.len() {
            self.add_chunk(k);
        }
        self.chunks[k].push(value);
        self.len += 1;
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (k, offset) = locate(i);
        self.chunks.get(k)?.get(offset)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (k, offset) = locate(i);
        self.chunks.get_mut(k)?.get_mut(offset)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    #[cold]
    fn add_chunk(&mut self, k: usize) {
        let chunk = match self.spare.pop() {
            Some(chunk) if chunk.capacity() >= capacity(k) => chunk,
            // Invariant 4: the rest would not fit either.
            _ => {
                self.spare.clear();
                Vec::with_capacity(capacity(k))
            }
        };
        self.chunks.push(chunk);
    }

    /// Empties the vector; its chunks are kept for the next pushes
    /// (invariant 4).
    pub(crate) fn clear(&mut self) {
        let chunks = self.take_chunks();
        self.reuse(chunks);
    }

    /// Empties the vector and returns its chunks, empty, in index order
    /// (for `reuse`).
    pub(crate) fn take_chunks(&mut self) -> Vec<Vec<T>> {
        let mut chunks = std::mem::take(&mut self.chunks);
        for chunk in &mut chunks {
            chunk.clear();
        }
        chunks.extend(std::mem::take(&mut self.spare).into_iter().rev());
        self.len = 0;
        chunks
    }

    /// Fills these empty chunks (from `take_chunks`) before allocating any.
    pub(crate) fn reuse(&mut self, mut chunks: Vec<Vec<T>>) {
        chunks.reverse();
        self.spare = chunks;
    }
}

enum Entry<T> {
    Vacant(usize),
    Occupied(T),
}

/// An occupied entry of a [`ChunkSlab`] (`ChunkSlab::occupied`).
pub(crate) struct Occupied<'s, T> {
    entry: &'s mut Entry<T>,
    next: &'s mut usize,
    len: &'s mut usize,
    key: usize,
}

impl<T> Occupied<'_, T> {
    #[inline]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        match self.entry {
            Entry::Occupied(value) => value,
            Entry::Vacant(_) => unreachable!("an `Occupied` entry is occupied"),
        }
    }

    /// Removes the value, as `ChunkSlab::remove` would.
    #[inline]
    pub(crate) fn remove(self) -> T {
        match std::mem::replace(self.entry, Entry::Vacant(*self.next)) {
            Entry::Occupied(value) => {
                *self.next = self.key;
                *self.len -= 1;
                value
            }
            Entry::Vacant(_) => unreachable!("an `Occupied` entry is occupied"),
        }
    }
}

/// A slab (stable keys, reused after removal) over a [`ChunkVec`].
pub(crate) struct ChunkSlab<T> {
    entries: ChunkVec<Entry<T>>,
    /// Head of the free list (invariant 3).
    next: usize,
    len: usize,
}

impl<T> Default for ChunkSlab<T> {
    fn default() -> Self {
        ChunkSlab {
            entries: ChunkVec::default(),
            next: 0,
            len: 0,
        }
    }
}

impl<T> ChunkSlab<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next `insert` will use.
    #[cfg(test)]
    fn vacant_key(&self) -> usize {
        self.next
    }

    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.next;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(value));
            self.next = key + 1;
        } else {
            let entry = self
                .entries
                .get_mut(key)
                .expect("the free list points at an entry");
            match std::mem::replace(entry, Entry::Occupied(value)) {
                Entry::Vacant(next) => self.next = next,
                Entry::Occupied(_) => unreachable!("the free list points at a vacant entry"),
            }
        }
        self.len += 1;
        key
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// The occupied entry at `key`, to use and maybe remove without
    /// locating it twice.
    #[inline]
    pub(crate) fn occupied(&mut self, key: usize) -> Option<Occupied<'_, T>> {
        let entry = self.entries.get_mut(key)?;
        if let Entry::Vacant(_) = entry {
            return None;
        }
        Some(Occupied {
            entry,
            next: &mut self.next,
            len: &mut self.len,
            key,
        })
    }

    /// One more than the highest key ever handed out.
    pub(crate) fn key_end(&self) -> usize {
        self.entries.len()
    }

    /// Removes the value at `key`, which must be occupied.
    #[inline]
    pub(crate) fn remove(&mut self, key: usize) -> T {
        let entry = self
            .entries
            .get_mut(key)
            .expect("removing a key that was inserted");
        match std::mem::replace(entry, Entry::Vacant(self.next)) {
            Entry::Occupied(value) => {
                self.next = key;
                self.len -= 1;
                value
            }
            Entry::Vacant(next) => {
                *entry = Entry::Vacant(next);
                panic!("removing a vacant key")
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.next = 0;
        self.len = 0;
    }

    /// Empties the slab; its chunks' memory as chunks of `U` (`convert`).
    #[cfg_attr(hatchery_loom, allow(dead_code))] // no per-thread pools there
    pub(crate) fn take_chunks<U>(&mut self) -> Vec<Vec<U>> {
        self.next = 0;
        self.len = 0;
        convert(self.entries.take_chunks())
    }

    /// Fills the memory of these chunks (from `take_chunks`) before
    /// allocating any; the slab must be empty.
    pub(crate) fn reuse<U>(&mut self, chunks: Vec<Vec<U>>) {
        debug_assert!(self.entries.len() == 0);
        self.entries.reuse(convert(chunks));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_indices_without_gaps() {
        let mut expected = (0, 0);
        for i in 0..10_000 {
            assert_eq!(locate(i), expected, "index {i}");
            expected.1 += 1;
            if expected.1 == capacity(expected.0) {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    #[test]
    fn elements_keep_their_index_and_never_move() {
        let mut v = ChunkVec::default();
        for i in 0..5000 {
            v.push(i);
        }
        let first = v.get(0).unwrap() as *const usize;
        for i in 5000..9000 {
            v.push(i);
        }
        assert_eq!(v.get(0).unwrap() as *const usize, first);
        assert!((0..9000).all(|i| v.get(i) == Some(&i)));
        assert_eq!(v.get(9000), None);
        assert_eq!(
            v.iter().copied().sum::<usize>(),
            (0..9000usize).sum::<usize>()
        );
        // 9000 elements in 16+16+…+1024 (2048) + 7 chunks of 1024.
        assert_eq!(v.chunks.len(), 15);
    }

    #[test]
    fn invariant_4_reused_chunks_keep_their_memory_and_their_capacity() {
        let mut slab = ChunkSlab::default();
        for i in 0..3000 {
            slab.insert(i.to_string());
        }
        let firsts: Vec<usize> = slab
            .entries
            .chunks
            .iter()
            .map(|c| c.as_ptr() as usize)
            .collect();
        let erased: Vec<Vec<[usize; 3]>> = slab.take_chunks();
        assert!(slab.is_empty());
        assert_eq!(erased.len(), firsts.len());
        // Another slab, of another element type of the same layout.
        let mut other: ChunkSlab<Vec<u8>> = ChunkSlab::default();
        other.reuse(erased);
        for i in 0..3000 {
            other.insert(vec![i as u8]);
        }
        let reused: Vec<usize> = other
            .entries
            .chunks
            .iter()
            .map(|c| c.as_ptr() as usize)
            .collect();
        assert_eq!(reused, firsts, "the same memory, chunk by chunk");
        for (k, chunk) in other.entries.chunks.iter().enumerate() {
            assert_eq!(chunk.capacity(), capacity(k));
        }
        assert_eq!(other.get_mut(2999), Some(&mut vec![2999usize as u8]));
    }

    #[test]
    fn a_slab_reuses_the_last_freed_key_first() {
        let mut slab = ChunkSlab::default();
        let keys: Vec<usize> = (0..40).map(|i| slab.insert(i)).collect();
        assert_eq!(keys, (0..40).collect::<Vec<_>>());
        assert_eq!(slab.remove(3), 3);
        assert_eq!(slab.remove(30), 30);
        assert_eq!(slab.get_mut(3), None);
        assert_eq!(slab.vacant_key(), 30);
        assert_eq!(slab.insert(100), 30);
        assert_eq!(slab.insert(101), 3);
        assert_eq!(slab.insert(102), 40);
        assert_eq!(slab.get_mut(3), Some(&mut 101));
        for key in 0..41 {
            slab.remove(key);
        }
        assert!(slab.is_empty());
    }

    #[test]
    #[should_panic(expected = "removing a vacant key")]
    fn removing_twice_is_a_bug_not_a_corruption() {
        let mut slab = ChunkSlab::default();
        let key = slab.insert(1);
        slab.remove(key);
        slab.remove(key);
    }
}
