//! Where each agent's history was last read: one sequence cursor per pod uid, so every poll asks
//! an agent only for what it has not sent yet (`/v1/history?since=<cursor>`).
//!
//! An agent numbers its history records from one counter starting at 1 (`docs/AGENT.md`). A page
//! answers `nextSeq`, the `since` of the next poll, and `oldestSeq`, the oldest record it still
//! holds. From that the poller tells apart:
//! - **more pages**: the page is full (`records == limit`) and `nextSeq` moved: ask again from
//!   `nextSeq` in the same poll;
//! - **done**: remember `nextSeq` for the next poll;
//! - **restarted**: `nextSeq < since` — the agent's counter started over (its container
//!   restarted and lost its ring buffers): read it again from 0. An agent that restarted and
//!   already holds more records than the cursor cannot be told apart this way; its records below
//!   the cursor are then missed (the analysis counts the rounds missing as a gap).
//! - **gap**: `since < oldestSeq` — records evicted from the agent's ring buffers before they
//!   were read; counted, not fatal.
//!
//! A pod that is recreated under the same name has a new uid, hence a fresh cursor.

use std::collections::HashMap;

use crate::analysis::History;

/// What to do after one page of an agent's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The page is full: ask again from `since` in this poll.
    More {
        /// The next page's `since`.
        since: u64,
    },
    /// Everything was read: ask from `next` at the next poll.
    Done {
        /// The cursor to keep.
        next: u64,
    },
    /// The agent's counter went backwards: read it again from 0.
    Restarted,
}

/// The size of a history page: what [`step`] needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// `nextSeq` of the page.
    pub next_seq: u64,
    /// `oldestSeq` of the page.
    pub oldest_seq: u64,
    /// Records in the page, all kinds together.
    pub records: usize,
}

impl Page {
    /// The size of a history document.
    pub fn of(doc: &History) -> Page {
        Page {
            next_seq: doc.next_seq,
            oldest_seq: doc.oldest_seq,
            records: doc.rounds.len() + doc.clients.len() + doc.system.len() + doc.kafka.len(),
        }
    }
}

/// The step after a page asked for with `since` and `limit`.
pub fn step(since: u64, limit: usize, page: Page) -> Step {
    if page.next_seq < since {
        Step::Restarted
    } else if page.records >= limit && page.next_seq > since {
        Step::More { since: page.next_seq }
    } else {
        Step::Done { next: page.next_seq }
    }
}

/// Records evicted before they were read: those from `since` (sequence numbers start at 1) up to
/// the page's `oldestSeq`.
pub fn missed(since: u64, page: Page) -> u64 {
    page.oldest_seq.saturating_sub(since.max(1))
}

/// Polls to skip an agent after its `failures`-th failed read in a row: none after the first
/// (it is tried again at the next poll), then 1, 3, 7 and at most 15 (2.5 min at 10 s polls), so
/// agents that time out do not stretch every poll while one that comes back is soon read again.
pub fn backoff_polls(failures: u32) -> u64 {
    (1u64 << failures.saturating_sub(1).min(4)) - 1
}

/// One cursor per pod uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursors {
    by_uid: HashMap<String, u64>,
}

impl Cursors {
    /// The `since` of the next poll of the pod with `uid`: 0 for a pod not read before.
    pub fn since(&self, uid: &str) -> u64 {
        self.by_uid.get(uid).copied().unwrap_or(0)
    }

    /// Remembers where the pod with `uid` was read up to.
    pub fn set(&mut self, uid: &str, next: u64) {
        self.by_uid.insert(uid.to_owned(), next);
    }

    /// Forgets the cursors of pods that are gone.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.by_uid.retain(|uid, _| live(uid));
    }

    /// Pods with a cursor.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether no pod has a cursor.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(next_seq: u64, oldest_seq: u64, records: usize) -> Page {
        Page {
            next_seq,
            oldest_seq,
            records,
        }
    }

    #[test]
    fn a_page_smaller_than_the_limit_ends_the_poll_at_its_next_seq() {
        assert_eq!(step(0, 100, page(8, 1, 7)), Step::Done { next: 8 });
    }

    #[test]
    fn a_full_page_asks_again_from_its_next_seq() {
        assert_eq!(step(1, 3, page(4, 1, 3)), Step::More { since: 4 });
    }

    #[test]
    fn a_full_page_that_does_not_advance_ends_the_poll() {
        // A limit of 0 records can never advance; the cursor must not loop.
        assert_eq!(step(5, 0, page(5, 1, 0)), Step::Done { next: 5 });
    }

    #[test]
    fn an_empty_page_keeps_the_cursor_where_it_was() {
        assert_eq!(step(9, 100, page(9, 1, 0)), Step::Done { next: 9 });
    }

    #[test]
    fn a_next_seq_below_the_cursor_means_the_agent_started_over() {
        // The agent had sent records 1..=500; after a restart it holds 2 records.
        assert_eq!(step(501, 100, page(3, 1, 0)), Step::Restarted);
    }

    #[test]
    fn records_evicted_before_they_were_read_are_counted() {
        assert_eq!(missed(0, page(900, 101, 10)), 100);
        assert_eq!(missed(150, page(900, 101, 10)), 0);
        assert_eq!(missed(0, page(3, 1, 2)), 0);
    }

    #[test]
    fn a_failing_agent_is_skipped_for_more_polls_each_time_up_to_fifteen() {
        let skips: Vec<u64> = (1..=7).map(backoff_polls).collect();
        assert_eq!(skips, [0, 1, 3, 7, 15, 15, 15]);
        assert_eq!(backoff_polls(u32::MAX), 15);
    }

    #[test]
    fn a_new_uid_starts_from_zero_and_gone_pods_are_forgotten() {
        let mut cursors = Cursors::default();
        cursors.set("uid-a", 12);
        assert_eq!(cursors.since("uid-a"), 12);
        assert_eq!(cursors.since("uid-b"), 0, "a recreated pod has a new uid");
        cursors.set("uid-b", 3);
        cursors.retain(|uid| uid == "uid-b");
        assert_eq!(cursors.since("uid-a"), 0);
        assert_eq!(cursors.len(), 1);
    }
}
