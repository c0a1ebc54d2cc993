//! The operator's memory and glibc's allocator (the image's: distroless cc-debian12).
//!
//! Previews come and go, and glibc keeps the memory of the environments the operator forgot
//! for its own reuse instead of giving it back: the resident set grows with what was ever
//! held, not with what is held. Two settings bring it closer to what is held (both measured with
//! `appenv bench`, README "Measured"):
//! - at most two malloc arenas (glibc's default is 8 per core): the tokio worker threads then
//!   share the arenas' free memory instead of each keeping its own;
//! - `malloc_trim(0)` every `--memory-trim-seconds`: the free pages inside the arenas are
//!   returned to the system (on a blocking thread; the operator's CPU seconds per
//!   environment did not change measurably).
//!
//! Elsewhere (musl, other systems) both do nothing.

/// The most malloc arenas the operator uses, unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

/// Limit glibc's malloc arenas to [`ARENAS`], unless the environment sets `MALLOC_ARENA_MAX`
/// (which glibc reads itself). Called before the runtime's threads start, so that none of them
/// has taken an arena of its own yet.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        glibc::limit_arenas(ARENAS);
    }
}

/// Return the free memory of the allocator to the system every `period`, until the process
/// ends. `None`: never.
pub async fn give_back_every(period: Option<std::time::Duration>) {
    let Some(period) = period else {
        return;
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: nothing to give back yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // It walks every arena under its lock: off the runtime's worker threads.
        let returned = tokio::task::spawn_blocking(glibc::trim).await;
        tracing::trace!(returned = ?returned, "malloc_trim");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub fn limit_arenas(arenas: i32) {
        // SAFETY: mallopt only sets a parameter of the allocator; M_ARENA_MAX takes any
        // positive count.
        // A refusal leaves glibc's default: nothing to report (and logging is not set up yet).
        let _set = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }

    /// Whether memory was returned.
    pub fn trim() -> bool {
        // SAFETY: malloc_trim takes the arenas' locks itself and only releases free pages.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn limit_arenas(_arenas: i32) {}

    pub fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn never_gives_back_without_a_period() {
        // Returns at once: with no period there is no loop to run.
        super::give_back_every(None).await;
    }

    #[test]
    fn memory_freed_between_held_blocks_is_given_back() {
        // Every other block stays: the freed ones are holes inside the heap, which free() alone
        // never returns (it gives back only the heap's top).
        let mut blocks: Vec<Option<Vec<u8>>> = (0..512_u32)
            .map(|i| Some(vec![(i % 251) as u8; 32 * 1024]))
            .collect();
        for block in blocks.iter_mut().step_by(2) {
            *block = None;
        }
        let returned = super::glibc::trim();
        assert_eq!(returned, cfg!(all(target_os = "linux", target_env = "gnu")));
        let kept: usize = blocks.iter().flatten().map(|b| usize::from(b[0])).sum();
        assert_eq!(
            kept,
            (1..512_usize).step_by(2).map(|i| i % 251).sum::<usize>()
        );
    }
}
