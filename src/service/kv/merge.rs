//! The state as one sequence: the records of the buckets merged with the changes applied
//! since they were built, in state order. A fold writes it into new buckets; equality and
//! `Debug` read it.

use super::changes::Change;
use super::layout::Record;
use std::cmp::Ordering;
use std::iter::Peekable;

/// The records of `base` with `changes` applied: a changed key's new value replaces its
/// record, a deleted key's record is skipped. Both inputs in state order.
pub(super) fn merge<'a, B, C>(base: B, changes: C) -> Merge<'a, B, C>
where
    B: Iterator<Item = Record<'a>>,
    C: Iterator<Item = Change<'a>>,
{
    Merge {
        base: base.peekable(),
        changes: changes.peekable(),
    }
}

/// See [`merge`].
pub(super) struct Merge<'a, B: Iterator<Item = Record<'a>>, C: Iterator<Item = Change<'a>>> {
    base: Peekable<B>,
    changes: Peekable<C>,
}

impl<'a, B, C> Iterator for Merge<'a, B, C>
where
    B: Iterator<Item = Record<'a>>,
    C: Iterator<Item = Change<'a>>,
{
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        loop {
            let order = match (self.base.peek(), self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(record), Some(change)) => {
                    (record.hash, record.key).cmp(&(change.hash, change.key))
                }
            };
            match order {
                Ordering::Less => return self.base.next(),
                // The change replaces (or deletes) the record.
                Ordering::Equal => drop(self.base.next()),
                Ordering::Greater => {}
            }
            let change = self.changes.next().expect("peeked");
            if let Some(value) = change.value {
                return Some(Record {
                    hash: change.hash,
                    key: change.key,
                    value,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::changes::Changes;
    use super::super::layout::key_hash;
    use super::*;
    use std::collections::BTreeMap;

    fn check(base: &[(&str, &str)], changes: &[(&str, Option<&str>)], expected: &[(&str, &str)]) {
        fn at(key: &str) -> (u64, &[u8]) {
            (key_hash(key.as_bytes()), key.as_bytes())
        }
        let base: BTreeMap<_, _> = base.iter().map(|(k, v)| (at(k), v.as_bytes())).collect();
        let mut changed = Changes::new();
        for (key, value) in changes {
            let (hash, key) = at(key);
            changed.set(hash, key, value.map(str::as_bytes));
        }
        let records = base
            .iter()
            .map(|(&(hash, key), value)| Record { hash, key, value });
        let merged: Vec<Record> = merge(records, changed.iter()).collect();
        assert!(merged
            .windows(2)
            .all(|w| (w[0].hash, w[0].key) < (w[1].hash, w[1].key)));
        let mut merged: Vec<(&[u8], &[u8])> = merged.iter().map(|r| (r.key, r.value)).collect();
        let mut expected: Vec<(&[u8], &[u8])> = expected
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        merged.sort();
        expected.sort();
        assert_eq!(merged, expected);
    }

    #[test]
    fn changes_replace_add_and_delete_records() {
        check(&[], &[], &[]);
        check(&[("a", "1"), ("b", "2")], &[], &[("a", "1"), ("b", "2")]);
        check(&[], &[("a", Some("1")), ("b", None)], &[("a", "1")]);
        check(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[
                ("a", None),
                ("b", Some("20")),
                ("d", Some("4")),
                ("e", None),
            ],
            &[("b", "20"), ("c", "3"), ("d", "4")],
        );
    }
}
