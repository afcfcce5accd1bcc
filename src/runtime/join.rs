//! Starting a replica that joins a running cluster (`vsr replica --join OLD`, paper 7.5):
//! before its event loop starts, it asks the replicas it was told of for their
//! configuration and takes the newest one any of them reports.
//!
//! - If its own address is a member of that configuration, it is a member that lost its
//!   memory (it was restarted after the change that added it): it recovers in that
//!   epoch under the member's identity (paper 4.3).
//! - Otherwise it is a new member warming up: its identity is the one
//!   [`Configuration::successor_at`] gives its address in `--cluster NEW`, the rule
//!   `vsr admin reconfigure --to NEW` applies too, and it learns committed state from
//!   the running configuration as a learner (`Start::Join`) until a StartEpoch makes it
//!   a member.
//!
//! Asking is bounded: every address is asked in turn, for at most
//! [`ServerOptions::join_timeout`] in all.

use super::membership::address_bytes;
use super::options::{ServerError, ServerOptions};
use crate::client::{replica_stats, StatsOptions};
use crate::protocol::{Configuration, ReplicaId};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// How long one replica is given to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between rounds of asking when nobody answered.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// How a `--join` replica starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joining {
    /// The newest configuration a replica reported.
    pub configuration: Configuration,
    /// Our identity.
    pub id: ReplicaId,
    /// Whether we are a member of `configuration` already (then we recover in it).
    pub member: bool,
}

/// Asks the replicas of `options.join` (and of `--cluster`, but us) for their
/// configuration and decides how we start.
pub fn discover(options: &ServerOptions) -> Result<Joining, ServerError> {
    let own = options.address();
    let mut asked: Vec<SocketAddr> = options.join.clone();
    asked.extend(options.addresses.iter().copied());
    asked.retain(|&address| address != own);
    asked.dedup();
    let stats_options = StatsOptions {
        cluster_id: options.config.cluster,
        cluster_key: options.cluster_key.clone(),
        timeout: ASK_TIMEOUT,
    };
    let deadline = Instant::now() + options.join_timeout;
    let mut newest: Option<Configuration> = None;
    let mut reasons = Vec::new();
    loop {
        for &address in &asked {
            match replica_stats(address, &stats_options) {
                Ok(stats) => match stats
                    .configuration
                    .as_ref()
                    .and_then(|c| c.to_configuration())
                {
                    Some(configuration)
                        if newest
                            .as_ref()
                            .is_none_or(|newest| configuration.epoch() > newest.epoch()) =>
                    {
                        newest = Some(configuration)
                    }
                    Some(_) => {}
                    None => reasons.push(format!("{address}: reported no valid configuration")),
                },
                Err(error) => {
                    debug!(%address, %error, "asking for the configuration failed");
                    reasons.push(format!("{address}: {error}"));
                }
            }
        }
        if newest.is_some() || Instant::now() >= deadline {
            break;
        }
        reasons.clear();
        std::thread::sleep(ROUND_PAUSE);
    }
    let Some(configuration) = newest else {
        return Err(ServerError::Join(format!(
            "no replica told its configuration within {:?} ({})",
            options.join_timeout,
            reasons.join("; ")
        )));
    };
    let joining = decide(options, configuration)?;
    info!(
        epoch = joining.configuration.epoch(),
        id = joining.id,
        member = joining.member,
        "joining the cluster"
    );
    Ok(joining)
}

/// How we start, given the newest configuration of the cluster.
pub fn decide(
    options: &ServerOptions,
    configuration: Configuration,
) -> Result<Joining, ServerError> {
    let own = address_bytes(options.address());
    if let Some(member) = configuration
        .members()
        .iter()
        .find(|member| member.address == own)
    {
        let id = member.id;
        return Ok(Joining {
            configuration,
            id,
            member: true,
        });
    }
    let addresses: Vec<_> = options
        .addresses
        .iter()
        .map(|&a| address_bytes(a))
        .collect();
    let next = configuration.successor_at(&addresses);
    let id = next.id_of(options.replica);
    if let Err(reason) = configuration.check_successor(&next) {
        return Err(ServerError::Join(format!(
            "--cluster cannot follow the cluster's epoch {} configuration: {reason}",
            configuration.epoch()
        )));
    }
    Ok(Joining {
        configuration,
        id,
        member: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    }

    fn initial(ports: &[u16]) -> Configuration {
        let bytes: Vec<_> = addresses(ports).into_iter().map(address_bytes).collect();
        Configuration::initial_with_addresses(&bytes)
    }

    fn options(ports: &[u16], replica: u8) -> ServerOptions {
        let mut options = ServerOptions::new(addresses(ports), replica, 0);
        options.join = addresses(&[1, 2, 3]);
        options
    }

    #[test]
    fn a_new_address_gets_the_identity_the_reconfiguration_will_give_it() {
        let old = initial(&[1, 2, 3]);
        // NEW = 2, 3, 4, 1, 5: the newcomers 4 and 5 get identities 3 and 4.
        let joining = decide(&options(&[2, 3, 4, 1, 5], 2), old.clone()).unwrap();
        assert_eq!((joining.id, joining.member), (3, false));
        let joining = decide(&options(&[2, 3, 4, 1, 5], 4), old.clone()).unwrap();
        assert_eq!((joining.id, joining.member), (4, false));
        // A member's own address: it is a member (restarted after the change).
        let joining = decide(&options(&[2, 3, 4, 1, 5], 0), old).unwrap();
        assert_eq!((joining.id, joining.member), (1, true));
    }

    #[test]
    fn a_new_configuration_that_cannot_follow_is_refused() {
        // Four members: not 2f+1.
        let error = decide(&options(&[1, 2, 3, 4], 3), initial(&[1, 2, 3])).unwrap_err();
        assert!(error.to_string().contains("cannot follow"), "{error}");
    }
}
