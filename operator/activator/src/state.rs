//! What the activator keeps per environment while it serves it (the round-robin position, its
//! held requests, its writes of the annotation, the signal that its route changed), and the
//! bounds on held requests.

use crate::decide::Local;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;

/// One environment's state in this replica.
#[derive(Debug)]
pub struct EnvironmentState {
    name: String,
    /// Bumped when the environment or its web Pods change: held requests look again.
    changed: watch::Sender<u64>,
    next: AtomicUsize,
    held: AtomicUsize,
    local: Mutex<Local>,
}

impl EnvironmentState {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            changed: watch::Sender::new(0),
            next: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            local: Mutex::new(Local::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A receiver that sees every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The backends in the order to try them: round robin over requests.
    pub fn order(&self, backends: &[SocketAddr]) -> Vec<SocketAddr> {
        if backends.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        backends[start..]
            .iter()
            .chain(&backends[..start])
            .copied()
            .collect()
    }

    /// Its write state (the decision's `Local`).
    pub fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The state of every environment that had a request, by name.
#[derive(Debug, Default)]
pub struct States(Mutex<HashMap<String, Arc<EnvironmentState>>>);

impl States {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<EnvironmentState>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Arc<EnvironmentState> {
        self.lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(EnvironmentState::new(name)))
            .clone()
    }

    /// Tell the held requests of `name` (if it has a state) that its route changed; forget
    /// it when `gone` (its requests find out by looking again).
    pub fn changed(&self, name: &str, gone: bool) {
        let state = if gone {
            self.lock().remove(name)
        } else {
            self.lock().get(name).cloned()
        };
        if let Some(state) = state {
            state.notify();
        }
    }
}

/// The bounds on held requests, and how many are held now.
#[derive(Debug)]
pub struct Holds {
    per_environment: usize,
    total: watch::Sender<usize>,
    limit: usize,
}

/// A held request: its place is given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    holds: &'a Holds,
    environment: Arc<EnvironmentState>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.environment.held.fetch_sub(1, Ordering::AcqRel);
        self.holds.total.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Holds {
    pub fn new(per_environment: usize, total: usize) -> Self {
        Self {
            per_environment,
            total: watch::Sender::new(0),
            limit: total,
        }
    }

    /// A place for one more held request of `environment`, unless a bound is reached.
    pub fn hold(&self, environment: &Arc<EnvironmentState>) -> Option<Held<'_>> {
        let per_environment = self.per_environment;
        environment
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < per_environment).then_some(n + 1)
            })
            .ok()?;
        let taken = self.total.send_if_modified(|n| {
            let free = *n < self.limit;
            if free {
                *n += 1;
            }
            free
        });
        if !taken {
            environment.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Held {
            holds: self,
            environment: environment.clone(),
        })
    }

    /// The number of requests held, now and as it changes.
    pub fn count(&self) -> watch::Receiver<usize> {
        self.total.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_bounded_per_environment_and_in_total_and_given_back() {
        let holds = Holds::new(2, 3);
        let states = States::default();
        let (a, b) = (states.get("a"), states.get("b"));
        let a1 = holds.hold(&a).expect("a: 1 of 2");
        let a2 = holds.hold(&a).expect("a: 2 of 2");
        assert!(holds.hold(&a).is_none(), "a is at its bound");
        let b1 = holds.hold(&b).expect("total: 3 of 3");
        assert!(holds.hold(&b).is_none(), "the total is at its bound");
        assert_eq!(*holds.count().borrow(), 3);
        drop(a1);
        assert!(holds.hold(&b).is_some(), "a place given back");
        drop((a2, b1));
        assert_eq!(*holds.count().borrow(), 0);
        assert_eq!(a.held.load(Ordering::Acquire), 0);
    }

    #[test]
    fn backends_are_taken_in_turn() {
        let state = EnvironmentState::new("a");
        let backends: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| a.parse().expect("an address"))
            .collect();
        let firsts: Vec<SocketAddr> = (0..4).map(|_| state.order(&backends)[0]).collect();
        assert_eq!(firsts, [backends[0], backends[1], backends[2], backends[0]]);
        assert_eq!(
            state.order(&backends).len(),
            3,
            "the others follow, for a retry"
        );
        assert!(state.order(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_change_reaches_the_held_requests_and_a_gone_environment_is_forgotten() {
        let states = States::default();
        let state = states.get("a");
        let mut changes = state.subscribe();
        states.changed("a", false);
        changes.changed().await.expect("a change");
        states.changed("a", true);
        changes
            .changed()
            .await
            .expect("told before it is forgotten");
        assert!(!Arc::ptr_eq(&states.get("a"), &state), "a new state");
        states.changed("never-seen", false);
    }
}
