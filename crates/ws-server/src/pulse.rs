//! The server's pulse: one timer beats for the heartbeat of every session,
//! and the same signal carries the word to shut down.
//!
//! A session holds no timer of its own, only its place among the listeners:
//! an idle connection costs a waker here rather than a timer entry and a
//! shutdown future in its task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};

/// Set in the beat count once the server shuts down.
const SHUTDOWN: u64 = 1 << 63;

/// The wakers of the listening sessions, by slot.
#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// What every session listens to.
#[derive(Debug, Default)]
pub struct Pulse {
    /// Beats so far, with [`SHUTDOWN`] once the server shuts down.
    beats: AtomicU64,
    slots: Mutex<Slots>,
}

/// What a listener learned since it last looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Time for the heartbeat.
    Beat,
    /// The server shuts down.
    Shutdown,
}

impl Pulse {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Every change to the slots is one call: a panic cannot leave them half-made.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A beat: every listener hears [`Signal::Beat`].
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// The server shuts down: every listener hears [`Signal::Shutdown`], now and from then on.
    pub fn shut_down(&self) {
        self.beats.fetch_or(SHUTDOWN, Ordering::AcqRel);
        self.wake_all();
    }

    fn wake_all(&self) {
        for waker in self.slots().wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }

    /// The beats so far, in 31 bits: the count modulo 2^31.
    pub fn beats(&self) -> u32 {
        heard(self.beats.load(Ordering::Acquire) & !SHUTDOWN)
    }

    /// The beats since [`Pulse::beats`] gave `then`.
    pub fn beats_since(&self, then: u32) -> u32 {
        self.beats().wrapping_sub(then) & !(1 << 31)
    }

    /// A new listener, which has heard no beat yet but hears a shutdown
    /// that came before it.
    pub fn listen(&self) -> Listener {
        let mut slots = self.slots();
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.wakers.push(None);
                slots.wakers.len() - 1
            }
        };
        Listener { slot: slot as u32, heard: self.beats(), waker: Waker::noop().clone() }
    }

    fn register(&self, slot: usize, waker: &Waker) {
        self.slots().wakers[slot] = Some(waker.clone());
    }

    fn release(&self, slot: usize) {
        let mut slots = self.slots();
        slots.wakers[slot] = None;
        slots.free.push(slot);
    }
}

/// One session's place among the listeners of a [`Pulse`]; give it back
/// with [`Listener::release`].
#[derive(Debug)]
pub struct Listener {
    slot: u32,
    /// The beat count last reported, as [`heard`] keeps it.
    heard: u32,
    /// The waker registered in the slot, to register again only when the
    /// task's changes; a no-op one before the first poll.
    waker: Waker,
}

impl Listener {
    /// What happened since the last call, if anything; otherwise the task of
    /// `cx` is woken at the next beat or shutdown.
    pub fn poll(&mut self, pulse: &Pulse, cx: &mut Context<'_>) -> Option<Signal> {
        if !self.waker.will_wake(cx.waker()) {
            // Registered before the count is read, so a beat in between still wakes the task.
            pulse.register(self.slot as usize, cx.waker());
            self.waker = cx.waker().clone();
        }
        let beats = heard(pulse.beats.load(Ordering::Acquire));
        if beats == self.heard {
            return None;
        }
        self.heard = beats;
        Some(if beats & heard(SHUTDOWN) != 0 { Signal::Shutdown } else { Signal::Beat })
    }

    /// Gives the slot back, once, as the listener's holder ends.
    pub fn release(&self, pulse: &Pulse) {
        pulse.release(self.slot as usize);
    }
}

/// A beat count in 32 bits, for a smaller session: the count modulo 2^31
/// (68 years of beats a second), and the shutdown in the top bit.
fn heard(beats: u64) -> u32 {
    (beats as u32 & !(1 << 31)) | ((beats >> 32) as u32 & (1 << 31))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(count: &Count) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn each_beat_is_heard_once_and_wakes_the_listener() {
        let pulse = Pulse::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut listener = pulse.listen();
        assert_eq!(listener.poll(&pulse, &mut cx), None);
        pulse.beat();
        assert_eq!(woken(&count), 1);
        assert_eq!(listener.poll(&pulse, &mut cx), Some(Signal::Beat));
        assert_eq!(listener.poll(&pulse, &mut cx), None);
        pulse.shut_down();
        assert_eq!(woken(&count), 2);
        assert_eq!(listener.poll(&pulse, &mut cx), Some(Signal::Shutdown));
        listener.release(&pulse);
        pulse.beat();
        assert_eq!(woken(&count), 2, "a released slot is not woken");
    }

    #[test]
    fn a_listener_that_comes_after_the_shutdown_hears_it() {
        let pulse = Pulse::default();
        pulse.beat();
        pulse.shut_down();
        let waker = Waker::noop();
        let mut listener = pulse.listen();
        assert_eq!(listener.poll(&pulse, &mut Context::from_waker(waker)), Some(Signal::Shutdown));
    }

    #[test]
    fn slots_are_reused() {
        let pulse = Pulse::default();
        let first = pulse.listen();
        let slot = first.slot;
        first.release(&pulse);
        assert_eq!(pulse.listen().slot, slot);
    }

    #[test]
    fn beats_are_counted_since_a_time() {
        let pulse = Pulse::default();
        let then = pulse.beats();
        pulse.beat();
        pulse.beat();
        assert_eq!(pulse.beats_since(then), 2);
        pulse.shut_down();
        assert_eq!(pulse.beats_since(then), 2, "the shutdown is no beat");
        assert_eq!(pulse.beats_since((1 << 31) - 1), 3, "the count wraps in 31 bits");
    }

    #[test]
    fn a_beat_count_keeps_its_shutdown_in_32_bits() {
        assert_eq!(heard(5), 5);
        assert_eq!(heard(5 | SHUTDOWN), 5 | 1 << 31);
        assert_eq!(heard((1 << 31) + 7), 7, "the count wraps below the shutdown bit");
    }
}
