//! The state as one sequence: the records of the buckets merged with the changes applied
//! since they were built, in state order. A fold writes it into new buckets; equality and
//! `Debug` read it.

use super::layout::{Position, Record};
use bytes::Bytes;
use std::cmp::Ordering;
use std::iter::Peekable;

/// One change since the buckets were built, as the map of changes yields it: a key's
/// position and its latest value, or `None` when it was deleted.
pub(super) type Change<'a> = (&'a Position, &'a Option<Bytes>);

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
                (Some(record), Some(((hash, key), _))) => {
                    (record.hash, record.key).cmp(&(*hash, &key[..]))
                }
            };
            match order {
                Ordering::Less => return self.base.next(),
                // The change replaces (or deletes) the record.
                Ordering::Equal => drop(self.base.next()),
                Ordering::Greater => {}
            }
            let ((hash, key), value) = self.changes.next().expect("peeked");
            if let Some(value) = value {
                return Some(Record {
                    hash: *hash,
                    key,
                    value,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::key_hash;
    use super::*;
    use std::collections::BTreeMap;

    fn check(base: &[(&str, &str)], changes: &[(&str, Option<&str>)], expected: &[(&str, &str)]) {
        let at = |key: &str| {
            (
                key_hash(key.as_bytes()),
                Bytes::copy_from_slice(key.as_bytes()),
            )
        };
        let base: BTreeMap<_, _> = base.iter().map(|(k, v)| (at(k), v.as_bytes())).collect();
        let changes: BTreeMap<_, _> = (changes.iter())
            .map(|(k, v)| (at(k), v.map(|v| Bytes::copy_from_slice(v.as_bytes()))))
            .collect();
        let records = base.iter().map(|((hash, key), value)| Record {
            hash: *hash,
            key,
            value,
        });
        let merged: Vec<Record> = merge(records, changes.iter()).collect();
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
