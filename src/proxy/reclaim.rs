//! Room for new clients at `max-connections`: when every slot is taken, connections that wait
//! for a request are asked to close, the one waiting longest first, and the new connection
//! takes the slot that frees (nginx reuses idle keep-alive connections the same way). A
//! connection waits for a request when it has none in flight and has either read nothing
//! since its last response (an idle keep-alive connection, or a new one that sent nothing),
//! or been reading one request head for at least [`HEAD_GRACE`] (a slow or stalled head).
//! Without this, a client holding every slot with idle connections (one request each, then
//! nothing, renewed before `idle-timeout`) would lock every other client out.
//!
//! Invariants: a connection with a request in flight is never asked (a slow download or a slow
//! origin keeps its slot); a connection is asked once; one call asks at most [`BATCH`]
//! connections and no more than the new connections waiting minus those already asked; after
//! a pass that found too few, the next pass is at least [`SCAN_INTERVAL`] later, so a flood of
//! connections at the limit costs one pass over the table per interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::activity::Activity;

/// A request head that has taken this long makes its connection a candidate.
pub(super) const HEAD_GRACE: Duration = Duration::from_secs(1);
/// Most connections asked by one call.
const BATCH: usize = 32;
/// Least time between two passes when the previous one found fewer candidates than wanted.
const SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// The client connections of one listener that may be asked to close.
#[derive(Debug, Default)]
pub(super) struct Reclaimer {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Option<Arc<Activity>>>,
    free: Vec<usize>,
    /// Connections asked to close that have not ended yet.
    asked: usize,
    /// When a pass last found fewer candidates than it wanted.
    short: Option<Instant>,
}

/// A connection's place in the table; removed when dropped (the connection ended).
#[derive(Debug)]
pub(super) struct Registration {
    reclaimer: Arc<Reclaimer>,
    index: usize,
}

impl Reclaimer {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enter a connection; it stays a candidate until the registration is dropped.
    pub(super) fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registration {
        let mut t = self.table();
        let index = match t.free.pop() {
            Some(i) => {
                t.slots[i] = Some(activity);
                i
            }
            None => {
                t.slots.push(Some(activity));
                t.slots.len() - 1
            }
        };
        Registration {
            reclaimer: self.clone(),
            index,
        }
    }

    /// Ask connections to close so that `waiting` new connections get a slot: the ones
    /// waiting for a request longest, as many as `waiting` minus those asked already, at
    /// most [`BATCH`]. Returns how many asked connections have not ended yet (these slots
    /// are about to free; 0: none will soon).
    pub(super) fn make_room(&self, waiting: usize, now: Instant) -> usize {
        let mut t = self.table();
        let want = waiting.saturating_sub(t.asked).min(BATCH);
        if want == 0
            || t.short
                .is_some_and(|s| now.saturating_duration_since(s) < SCAN_INTERVAL)
        {
            return t.asked;
        }
        let mut candidates: Vec<(Instant, usize)> = t
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((a.as_ref()?.waiting_since(HEAD_GRACE, now)?, i)))
            .collect();
        if candidates.len() > want {
            candidates.select_nth_unstable(want - 1);
            candidates.truncate(want);
        }
        for &(_, i) in &candidates {
            if let Some(a) = &t.slots[i] {
                a.ask_to_close();
            }
        }
        t.asked += candidates.len();
        t.short = (candidates.len() < want).then_some(now);
        t.asked
    }

    #[cfg(test)]
    fn registered(&self) -> usize {
        self.table().slots.iter().flatten().count()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.reclaimer.table();
        if let Some(a) = t.slots[self.index].take() {
            if a.was_asked() {
                t.asked -= 1;
            }
            t.free.push(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::activity::InFlight;
    use crate::proxy::observed::Observer;

    fn conn(r: &Arc<Reclaimer>) -> (Arc<Activity>, Registration) {
        let a = Arc::new(Activity::new());
        let reg = r.register(a.clone());
        (a, reg)
    }

    /// Idle connections are asked longest-idle first, no more than the waiters need, and
    /// never twice; a connection with a request in flight or a head under the grace is not
    /// asked; an ended connection leaves the table.
    #[test]
    fn idle_connections_are_asked_oldest_first_and_busy_ones_never() {
        let r = Arc::new(Reclaimer::default());
        let (oldest, _r1) = conn(&r);
        std::thread::sleep(Duration::from_millis(5));
        let (busy, _r2) = conn(&r);
        let _req = InFlight::new(busy.clone());
        let (fresh_head, _r3) = conn(&r);
        fresh_head.on_read(b"GET / HT");
        std::thread::sleep(Duration::from_millis(5));
        let (newer, r4) = conn(&r);
        let now = Instant::now();
        assert_eq!(r.make_room(1, now), 1);
        assert!(oldest.was_asked());
        assert!(!busy.was_asked() && !fresh_head.was_asked() && !newer.was_asked());
        // One waiter, one asked and not closed yet: nobody else is asked.
        assert_eq!(r.make_room(1, now), 1);
        assert!(!newer.was_asked());
        // Two waiters: the next idle one.
        assert_eq!(r.make_room(2, now), 2);
        assert!(newer.was_asked());
        assert!(!busy.was_asked() && !fresh_head.was_asked());
        // Nothing else qualifies (busy, head under the grace): a short pass.
        assert_eq!(r.make_room(3, now), 2);
        assert!(!fresh_head.was_asked());
        // The head, once older than the grace, qualifies (after the scan interval).
        let later = now + HEAD_GRACE + SCAN_INTERVAL;
        assert_eq!(r.make_room(3, later), 3);
        assert!(fresh_head.was_asked());
        assert!(!busy.was_asked());
        drop(r4);
        assert_eq!(r.registered(), 3);
        assert_eq!(r.table().asked, 2);
    }

    /// A connection that finished a request is idle again, from the end of its response.
    #[test]
    fn a_finished_request_makes_the_connection_a_candidate_again() {
        let r = Arc::new(Reclaimer::default());
        let (a, _reg) = conn(&r);
        a.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let req = InFlight::new(a.clone());
        assert!(!a.head_pending());
        assert_eq!(r.make_room(1, Instant::now()), 0);
        drop(req);
        assert!(!a.head_pending());
        let later = Instant::now() + SCAN_INTERVAL;
        assert_eq!(r.make_room(1, later), 1);
        assert!(a.was_asked());
    }

    /// At most `BATCH` per call, however many wait; slots are reused after connections end.
    #[test]
    fn a_pass_asks_at_most_a_batch_and_slots_are_reused() {
        let r = Arc::new(Reclaimer::default());
        let conns: Vec<_> = (0..BATCH + 8).map(|_| conn(&r)).collect();
        assert_eq!(r.make_room(1000, Instant::now()), BATCH);
        let asked = conns.iter().filter(|(a, _)| a.was_asked()).count();
        assert_eq!(asked, BATCH);
        drop(conns);
        assert_eq!(r.registered(), 0);
        assert_eq!(r.table().asked, 0);
        let (_a, _reg) = conn(&r);
        assert_eq!(r.table().slots.len(), BATCH + 8, "a free slot was reused");
    }
}
