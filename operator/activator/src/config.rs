//! How an activator runs (the flags of `appenv activator`).

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The traffic port.
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub health_listen: SocketAddr,
    /// At most one activity write per environment this often.
    pub activity_interval: Duration,
    /// A held request that waits longer gets `503` with `Retry-After`.
    pub wake_timeout: Duration,
    /// A browser's held request that waits longer gets the "waking up" page.
    pub browser_wait: Duration,
    /// Requests held at once for one environment; past it, `503` at once.
    pub hold_per_environment: usize,
    /// Requests held at once in all; past it, `503` at once.
    pub hold_total: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            activity_interval: Duration::from_secs(60),
            wake_timeout: Duration::from_secs(60),
            browser_wait: Duration::from_secs(2),
            hold_per_environment: 1000,
            hold_total: 5000,
        }
    }
}
