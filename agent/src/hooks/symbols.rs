//! A name → address table a hook can search while every other thread is parked: built before,
//! searched without allocating or locking.

/// One named object or function, where it lives in memory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
    /// A variable in writable memory (not code, not read-only data).
    pub writable: bool,
}

/// Sorted by name; later entries for a name replace earlier ones when built through
/// [`SymbolTable::overlay`].
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    entries: Vec<(Box<[u8]>, Symbol)>,
}

impl SymbolTable {
    pub fn from_entries(mut entries: Vec<(Box<[u8]>, Symbol)>) -> SymbolTable {
        // The first definition of a name wins inside one file: a global before a local of the
        // same name is what the loader would pick, and the builder lists globals first.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, first| later.0 == first.0);
        SymbolTable { entries }
    }

    /// `other`'s entries that `take` accepts replace (or join) this table's.
    pub fn overlay(&mut self, other: SymbolTable, take: impl Fn(&[u8], &Symbol) -> bool) {
        let mut merged: Vec<(Box<[u8]>, Symbol)> = Vec::with_capacity(self.entries.len());
        let mut mine = std::mem::take(&mut self.entries).into_iter().peekable();
        let mut theirs = other
            .entries
            .into_iter()
            .filter(|(n, s)| take(n, s))
            .peekable();
        loop {
            let order = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            match order {
                std::cmp::Ordering::Less => merged.extend(mine.next()),
                std::cmp::Ordering::Greater => merged.extend(theirs.next()),
                std::cmp::Ordering::Equal => {
                    mine.next();
                    merged.extend(theirs.next());
                }
            }
        }
        self.entries = merged;
    }

    /// Allocates nothing.
    pub fn get(&self, name: &[u8]) -> Option<&Symbol> {
        self.entries
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    pub fn names(&self) -> impl Iterator<Item = (&[u8], &Symbol)> {
        self.entries.iter().map(|(n, s)| (n.as_ref(), s))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(items: &[(&str, u64)]) -> SymbolTable {
        SymbolTable::from_entries(
            items
                .iter()
                .map(|(n, a)| {
                    (
                        n.as_bytes().to_vec().into_boxed_slice(),
                        Symbol {
                            addr: *a,
                            size: 8,
                            writable: true,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn first_definition_of_a_name_wins_and_lookups_find_each() {
        let t = table(&[("b", 2), ("a", 1), ("b", 3), ("c", 4)]);
        assert_eq!(t.get(b"a").map(|s| s.addr), Some(1));
        assert_eq!(t.get(b"b").map(|s| s.addr), Some(2));
        assert_eq!(t.get(b"c").map(|s| s.addr), Some(4));
        assert_eq!(t.get(b"d"), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn overlay_replaces_only_what_it_takes() {
        let mut t = table(&[("count", 1), ("helper", 2), ("table", 3)]);
        t.overlay(
            table(&[("count", 10), ("helper", 20), ("zeta", 30)]),
            |n, _| n != b"helper",
        );
        assert_eq!(t.get(b"count").map(|s| s.addr), Some(10));
        assert_eq!(t.get(b"helper").map(|s| s.addr), Some(2));
        assert_eq!(t.get(b"table").map(|s| s.addr), Some(3));
        assert_eq!(t.get(b"zeta").map(|s| s.addr), Some(30));
    }
}
