//! Lease reads against real `vsr replica` processes (paper 6.3.1): a primary stopped
//! (SIGSTOP) for longer than its lease, while the others elect a new primary and a new
//! value is written, never answers a lease read with the old value once it runs again.

mod common;

use bytes::Bytes;
use common::client::TestClient;
use common::cluster::TestCluster;
use std::time::Duration;
use vsr::client::ReadMode;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_primary_stopped_past_its_lease_never_answers_a_stale_lease_read() {
    let mut cluster = TestCluster::start(3, "kv");
    cluster.wait_until_serving(30 * SECOND);
    let old_primary = cluster.primary().expect("one primary");
    let addresses = cluster.addresses().to_vec();
    let mut reader = TestClient::connect(&addresses, 0, 30 * SECOND).expect("the reader");
    reader
        .put(b"k", b"old", 10 * SECOND)
        .expect("the first write");
    // Lease reads until the primary answers one from its state under its lease.
    common::wait_for("a lease read answered under the lease", 30 * SECOND, || {
        let value = reader.read_in(b"k", ReadMode::Lease, 10 * SECOND);
        assert_eq!(value, Ok(Some(Bytes::from_static(b"old"))));
        cluster
            .stats(old_primary)
            .is_ok_and(|s| s.u64("lease_reads_answered") >= 1)
    });
    let view = reader.view();

    cluster.stop(old_primary);
    // The others wait out the lease they granted (500 ms), then the normal timeout, and
    // elect a new primary.
    let others: Vec<usize> = (0..3).filter(|&i| i != old_primary).collect();
    common::wait_for("a new primary among the others", 60 * SECOND, || {
        others.iter().any(|&i| {
            cluster
                .stats(i)
                .is_ok_and(|s| s.is_primary() && s.status() == "normal" && s.u64("view") > 0)
        })
    });
    let mut writer = TestClient::connect(&addresses, 0, 30 * SECOND).expect("the writer");
    writer
        .put(b"k", b"new", 30 * SECOND)
        .expect("the write in the new view");
    cluster.resume(old_primary);

    // The reader still believes in the old primary: its lease read goes there first.
    assert_eq!(
        reader.view(),
        view,
        "the reader has not heard of the new view"
    );
    let value = reader
        .read_in(b"k", ReadMode::Lease, 30 * SECOND)
        .expect("the lease read after the resume");
    assert_eq!(value, Some(Bytes::from_static(b"new")), "a stale read");
    // And again, now that the session follows the new view.
    let value = reader
        .read_in(b"k", ReadMode::Lease, 30 * SECOND)
        .expect("again");
    assert_eq!(value, Some(Bytes::from_static(b"new")));
}
