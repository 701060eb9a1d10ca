//! A map keyed by sequence numbers near the live edge, as a ring of slots.
//!
//! The peer's window of pieces and its wants hold a few hundred dense keys that slide
//! forward; a ring makes every lookup one index instead of a walk down a B-tree whose
//! nodes are scattered over the heap (at 100,000 simulated peers that walk was the
//! largest single cost: a cache miss per level).

use std::collections::VecDeque;

/// Keys within `span` of each other, ascending iteration. Inserting a key more than
/// `span` above the lowest evicts the lowest entries; a key more than `span` below the
/// highest is refused. The peer's own trimming keeps its keys well inside that.
#[derive(Debug, Clone)]
pub(super) struct SeqMap<T> {
    /// Key of `slots[0]`; `slots` starts and ends with an occupied slot (or is empty).
    base: u64,
    slots: VecDeque<Option<T>>,
    span: u64,
}

impl<T> SeqMap<T> {
    pub(super) fn new(span: u64) -> Self {
        SeqMap { base: 0, slots: VecDeque::new(), span: span.max(1) }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let off = seq.checked_sub(self.base)?;
        (off < self.slots.len() as u64).then_some(off as usize)
    }

    pub(super) fn get(&self, seq: u64) -> Option<&T> {
        self.slots.get(self.index(seq)?)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let i = self.index(seq)?;
        self.slots.get_mut(i)?.as_mut()
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Inserts or replaces; returns the previous value. `false` in the second field:
    /// refused, too far below the highest key (the value is dropped).
    pub(super) fn insert(&mut self, seq: u64, value: T) -> (Option<T>, bool) {
        if self.slots.is_empty() {
            self.base = seq;
            self.slots.push_back(Some(value));
            return (None, true);
        }
        if seq < self.base {
            let last = self.base + self.slots.len() as u64 - 1;
            if last - seq >= self.span {
                return (None, false);
            }
            for _ in seq..self.base {
                self.slots.push_front(None);
            }
            self.base = seq;
        } else if seq - self.base >= self.span {
            // Slide forward: the lowest keys fall out.
            let new_base = seq - self.span + 1;
            self.remove_below(new_base);
            if self.slots.is_empty() {
                self.base = seq;
            }
        }
        let off = (seq - self.base) as usize;
        while self.slots.len() <= off {
            self.slots.push_back(None);
        }
        (self.slots[off].replace(value), true)
    }

    /// The value at `seq`, inserted with `make` if absent (`None` if refused).
    pub(super) fn get_or_insert_with(&mut self, seq: u64, make: impl FnOnce() -> T) -> Option<&mut T> {
        if !self.contains(seq) && !self.insert(seq, make()).1 {
            return None;
        }
        self.get_mut(seq)
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<T> {
        let i = self.index(seq)?;
        let old = self.slots[i].take()?;
        self.trim_front();
        while matches!(self.slots.back(), Some(None)) {
            self.slots.pop_back();
        }
        Some(old)
    }

    fn trim_front(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Lowest key and its value.
    pub(super) fn first(&self) -> Option<(u64, &T)> {
        Some((self.base, self.slots.front()?.as_ref()?))
    }

    /// Drops every entry below `floor`.
    pub(super) fn remove_below(&mut self, floor: u64) {
        let n = floor.saturating_sub(self.base).min(self.slots.len() as u64);
        self.slots.drain(..n as usize);
        self.base += n;
        self.trim_front();
    }

    /// Entries in ascending key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.slots.iter().enumerate().filter_map(move |(i, v)| Some((base + i as u64, v.as_ref()?)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        let base = self.base;
        self.slots.iter_mut().enumerate().filter_map(move |(i, v)| Some((base + i as u64, v.as_mut()?)))
    }

    /// Entries with keys `>= from`, ascending.
    pub(super) fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, &T)> {
        let skip = from.saturating_sub(self.base).min(self.slots.len() as u64) as usize;
        let base = self.base;
        self.slots.range(skip..).enumerate().filter_map(move |(i, v)| Some((base + (skip + i) as u64, v.as_ref()?)))
    }

    /// Keeps the entries `keep` accepts.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64, &mut T) -> bool) {
        let base = self.base;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(v) = slot
                && !keep(base + i as u64, v)
            {
                *slot = None;
            }
        }
        self.trim_front();
        while matches!(self.slots.back(), Some(None)) {
            self.slots.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::SeqMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(u64),
        RemoveBelow(u64),
        RetainEven,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..300).prop_map(Op::Insert),
            2 => (0u64..300).prop_map(Op::Remove),
            1 => (0u64..300).prop_map(Op::RemoveBelow),
            1 => Just(Op::RetainEven),
        ]
    }

    proptest! {
        /// Within its span it behaves exactly as a `BTreeMap`; beyond, as documented.
        #[test]
        fn behaves_like_a_btree_map(ops in proptest::collection::vec(op(), 0..200)) {
            let span = 64;
            let mut map = SeqMap::new(span);
            let mut model = BTreeMap::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(k) => {
                        let highest = model.keys().next_back().copied();
                        let (old, ok) = map.insert(k, n);
                        if highest.is_some_and(|h: u64| h >= k && h - k >= span) {
                            prop_assert!(!ok);
                        } else {
                            prop_assert!(ok);
                            prop_assert_eq!(old, model.insert(k, n));
                            model.retain(|&key, _| key + span > k);
                        }
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(k), model.remove(&k)),
                    Op::RemoveBelow(f) => {
                        map.remove_below(f);
                        model.retain(|&k, _| k >= f);
                    }
                    Op::RetainEven => {
                        map.retain(|k, _| k % 2 == 0);
                        model.retain(|&k, _| k % 2 == 0);
                    }
                }
                let got: Vec<(u64, usize)> = map.iter().map(|(k, &v)| (k, v)).collect();
                let want: Vec<(u64, usize)> = model.iter().map(|(&k, &v)| (k, v)).collect();
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(map.first().map(|(k, &v)| (k, v)), model.first_key_value().map(|(&k, &v)| (k, v)));
                let from = 150;
                let got: Vec<u64> = map.iter_from(from).map(|(k, _)| k).collect();
                let want: Vec<u64> = model.range(from..).map(|(&k, _)| k).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
