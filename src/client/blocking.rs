//! [`Client`]: one session, one blocking call at a time. The simplest way to talk to a
//! cluster; the `vsr kv` command uses it.

use super::driver::{Completion, Driver};
use super::{ClientError, ClientOptions, ReadMode};
use crate::protocol::{Configuration, Operation};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// A blocking client with one session.
///
/// Each [`call`](Client::call) executes its operation exactly once if it returns `Ok`. If
/// it returns `Timeout` or `Evicted`, the operation executed at most once (perhaps not at
/// all) and the next call transparently starts a fresh session: a client must never
/// resend an operation whose outcome is unknown under a new session, or it could run twice.
pub struct Client {
    driver: Driver,
    completions: Vec<Completion>,
}

impl Client {
    /// Connects to the replicas at `addresses` (in configuration order) and registers a
    /// session.
    pub fn connect(
        addresses: &[SocketAddr],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let mut driver = Driver::new(addresses, options, 1, 1)?;
        driver.register_all()?;
        Ok(Client {
            driver,
            completions: Vec::with_capacity(1),
        })
    }

    /// Executes `operation` and returns the service's result, following view changes and
    /// retrying until the `request_timeout` deadline.
    pub fn call(&mut self, operation: Bytes) -> Result<Bytes, ClientError> {
        self.driver.submit(0, operation)?;
        self.wait()
    }

    /// Runs the read-only `query` (the service's [`query`](crate::service::StateMachine::query))
    /// in `mode`: [`ReadMode::Strict`] orders it through the log (linearizable);
    /// [`ReadMode::Lease`] asks the primary, which answers from its state while it holds
    /// a lease from f backups (paper 6.3.1), and the read goes through the log when it
    /// holds none (linearizable either way); [`ReadMode::Backup`] asks one replica at a
    /// time that has executed every op this client has seen (paper 6.3.2: reads its own
    /// writes, never goes back in time, may be stale). Retries and deadline as
    /// [`call`](Client::call).
    pub fn read(&mut self, query: Bytes, mode: ReadMode) -> Result<Bytes, ClientError> {
        self.driver.submit_operation(0, mode.operation(), query)?;
        self.wait()
    }

    /// Asks the cluster to move to `configuration` (paper 7: a RECONFIGURATION, ordered as
    /// the last op of the current epoch); returns once it committed. `Rejected` says why
    /// the primary refused it (not a successor of the current configuration, another
    /// reconfiguration in progress). The client follows the cluster to the new
    /// configuration afterwards. `vsr admin reconfigure` is this call and its checks.
    pub fn reconfigure(&mut self, configuration: &Configuration) -> Result<(), ClientError> {
        let body = configuration.to_bytes();
        self.driver
            .submit_operation(0, Operation::Reconfigure, body)?;
        self.wait().map(|_| ())
    }

    fn wait(&mut self) -> Result<Bytes, ClientError> {
        loop {
            // The driver completes the operation by its deadline (with `Timeout` at worst);
            // the poll timeout only bounds one wait.
            self.driver
                .poll(&mut self.completions, Duration::from_secs(1))?;
            if let Some(completion) = self.completions.pop() {
                debug_assert_eq!(completion.session, 0);
                debug_assert!(self.completions.is_empty());
                return completion.result;
            }
        }
    }
}
