//! What a reply must look like for the operation that was sent, and what a reply that does
//! not look like it says about the cluster. A vsr reply carries no service name, but the
//! bundled services answer each other's operations in ways that tell them apart:
//!
//! - null (and log) execute nothing and answer every operation with an empty reply;
//! - kv answers every operation with an encoded `KvResult`, never empty: `Ok` for a put,
//!   `Value` or `Nil` for a get, and `Invalid` (one byte, 5) for bytes that are no kv
//!   operation, such as a null payload.
//!
//! So a null operation answered by anything but an empty reply, or a kv operation answered
//! by an empty reply, means the cluster runs another service than the one driven: the run
//! stops at the first such reply instead of counting it as a success. Null and log cannot
//! be told apart from replies (both answer nothing), and neither can they by what they do
//! with a load: both execute nothing.

use bytes::Bytes;
use vsr::service::kv::KvResult;

/// What the reply to one operation must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Any reply (the raw-TCP baseline, which echoes nothing of the service).
    Anything,
    /// The null service: an empty reply.
    Empty,
    /// A kv put: `KvResult::Ok`.
    KvPut,
    /// A kv get: `KvResult::Value` or `KvResult::Nil`.
    KvGet,
}

/// `Ok` if `reply` is what `expect` allows; else why not, naming the likely cause.
pub fn check(expect: Expect, reply: &Bytes) -> Result<(), String> {
    match expect {
        Expect::Anything => Ok(()),
        Expect::Empty if reply.is_empty() => Ok(()),
        Expect::Empty => Err(match KvResult::decode(reply) {
            Some(KvResult::Invalid) => "the cluster runs the kv service, not null: it answered \
                 a null operation with kv's `invalid operation` result (rerun with --service kv)"
                .to_string(),
            _ => format!(
                "the cluster runs another service than null: a null operation got a {}-byte \
                 reply {} (null answers every operation with an empty reply)",
                reply.len(),
                preview(reply)
            ),
        }),
        Expect::KvPut | Expect::KvGet if reply.is_empty() => Err(
            "the cluster runs the null (or log) service, not kv: a kv operation got an empty \
             reply (kv answers every operation with a result; rerun with --service null)"
                .to_string(),
        ),
        Expect::KvPut | Expect::KvGet => {
            let what = if expect == Expect::KvPut {
                "put"
            } else {
                "get"
            };
            match KvResult::decode(reply) {
                Some(KvResult::Ok) if expect == Expect::KvPut => Ok(()),
                Some(KvResult::Value(_) | KvResult::Nil) if expect == Expect::KvGet => Ok(()),
                Some(KvResult::Invalid) => Err(format!(
                    "the cluster could not decode a kv {what}: it answered kv's `invalid \
                     operation` result (another kv encoding or version?)"
                )),
                Some(other) => Err(format!(
                    "a kv {what} got the result {other:?}, which a {what} never has"
                )),
                None => Err(format!(
                    "the cluster runs another service than kv: a kv {what} got a {}-byte reply \
                     {} that is no kv result",
                    reply.len(),
                    preview(reply)
                )),
            }
        }
    }
}

/// The first bytes of a reply, in hex, for an error message.
fn preview(reply: &Bytes) -> String {
    const SHOWN: usize = 8;
    let hex: Vec<String> = reply
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if reply.len() > SHOWN { " ..." } else { "" };
    format!("[{}{more}]", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsr::service::kv::KvOp;
    use vsr::service::{Kv, Null, StateMachine};

    /// The reply a service gives to `operation` (what a replica would send back).
    fn reply_of(service: &mut dyn StateMachine, operation: &Bytes) -> Bytes {
        service.apply(1, 0, operation)
    }

    fn check_against(service: &mut dyn StateMachine, operation: &Bytes, expect: Expect) -> String {
        match check(expect, &reply_of(service, operation)) {
            Ok(()) => "ok".to_string(),
            Err(why) => why,
        }
    }

    #[test]
    fn each_service_passes_its_own_replies() {
        let put = KvOp::Put(Bytes::from("k"), Bytes::from("v")).encode();
        let get = KvOp::Get(Bytes::from("k")).encode();
        let null = Bytes::from("abcdefgh");
        let mut kv = Kv::default();
        assert_eq!(check_against(&mut kv, &get, Expect::KvGet), "ok");
        assert_eq!(check_against(&mut kv, &put, Expect::KvPut), "ok");
        assert_eq!(check_against(&mut kv, &get, Expect::KvGet), "ok");
        assert_eq!(check_against(&mut Null, &null, Expect::Empty), "ok");
        assert_eq!(check_against(&mut Null, &put, Expect::Anything), "ok");
    }

    #[test]
    fn a_null_load_on_kv_names_kv() {
        let why = check_against(&mut Kv::default(), &Bytes::from("abcdefgh"), Expect::Empty);
        assert!(why.contains("runs the kv service, not null"), "{why}");
        assert!(why.contains("--service kv"), "{why}");
    }

    #[test]
    fn a_kv_load_on_null_names_null() {
        let put = KvOp::Put(Bytes::from("k"), Bytes::from("v")).encode();
        let why = check_against(&mut Null, &put, Expect::KvPut);
        assert!(why.contains("not kv"), "{why}");
        assert!(why.contains("--service null"), "{why}");
        let get = KvOp::Get(Bytes::from("k")).encode();
        assert!(check_against(&mut Null, &get, Expect::KvGet).contains("not kv"));
    }

    #[test]
    fn foreign_or_wrong_kv_results_are_refused() {
        assert!(check(Expect::Empty, &Bytes::from_static(&[0xff, 0, 1]))
            .unwrap_err()
            .contains("[ff 00 01]"));
        assert!(check(Expect::KvPut, &KvResult::Nil.encode())
            .unwrap_err()
            .contains("never has"));
        assert!(check(Expect::KvGet, &KvResult::Invalid.encode())
            .unwrap_err()
            .contains("could not decode"));
        assert!(check(Expect::KvGet, &Bytes::from_static(&[0xee; 12]))
            .unwrap_err()
            .contains("no kv result"));
    }
}
