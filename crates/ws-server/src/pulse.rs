//! The server's pulse: one timer beats for the heartbeat of every session,
//! and the same signal carries the word to shut down, and the server API's
//! orders to the connections of one user (disconnect, leave a room).
//!
//! A session holds no timer of its own, only its place among the listeners:
//! an idle connection costs a waker here rather than a timer entry and a
//! shutdown future in its task.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Set in the beat count once the server shuts down.
const SHUTDOWN: u64 = 1 << 63;

/// One listening session: its waker, and the hash of its user's name.
#[derive(Debug, Default)]
struct Slot {
    waker: Option<Waker>,
    user: u64,
}

/// The listening sessions, by slot, and the orders they have not heard yet.
#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    orders: Vec<(usize, Arc<Addressed>)>,
}

/// What every session listens to.
#[derive(Debug, Default)]
pub struct Pulse {
    /// Beats so far, with [`SHUTDOWN`] once the server shuts down.
    beats: AtomicU64,
    /// How many orders wait in the slots: none, the usual case, costs a
    /// listener one load.
    orders: AtomicUsize,
    slots: Mutex<Slots>,
}

/// What the server API asks of the connections of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Close with this code and reason.
    Disconnect {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Leave this room (the client is told `left`, reason `removed`).
    Unsubscribe {
        /// The room.
        room: String,
    },
}

/// An order, and the user it is for: a listener checks the name, as the
/// slots know only its hash.
#[derive(Debug, PartialEq, Eq)]
pub struct Addressed {
    /// The user's name.
    pub user: String,
    /// The order.
    pub order: Order,
}

/// What a listener learned since it last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Time for the heartbeat.
    Beat,
    /// The server shuts down.
    Shutdown,
    /// An order for the connections of a user, maybe this one's.
    Order(Arc<Addressed>),
}

/// The hash a slot keeps of its user's name: keyed alike in every run, as a
/// collision only costs a listener a look at a name that is not its own.
fn user_hash(user: &str) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(user)
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
        for waker in self.slots().slots.iter().filter_map(|slot| slot.waker.as_ref()) {
            waker.wake_by_ref();
        }
    }

    /// Gives `order` to every listener of `user` and wakes them; how many
    /// connections it reached.
    pub fn order(&self, user: &str, order: Order) -> usize {
        let (hash, addressed) = (user_hash(user), Arc::new(Addressed { user: user.to_owned(), order }));
        let mut slots = self.slots();
        let Slots { slots: all, orders, .. } = &mut *slots;
        let before = orders.len();
        for (i, slot) in all.iter().enumerate().filter(|(_, slot)| slot.user == hash && slot.waker.is_some()) {
            orders.push((i, addressed.clone()));
            slot.waker.iter().for_each(Waker::wake_by_ref);
        }
        let given = orders.len() - before;
        self.orders.fetch_add(given, Ordering::AcqRel);
        given
    }

    /// Waits for the word to shut down, as a listener of its own.
    pub async fn shutdown(&self) {
        struct Listening<'a>(&'a Pulse, Listener);
        impl Drop for Listening<'_> {
            fn drop(&mut self) {
                self.1.release(self.0);
            }
        }
        let mut listening = Listening(self, self.listen(""));
        std::future::poll_fn(|cx| {
            loop {
                match listening.1.poll(self, cx) {
                    Some(Signal::Shutdown) => return Poll::Ready(()),
                    Some(_) => {}
                    None => return Poll::Pending,
                }
            }
        })
        .await;
    }

    /// The first order waiting for `slot`, if any.
    fn take_order(&self, slot: usize) -> Option<Arc<Addressed>> {
        if self.orders.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut slots = self.slots();
        let i = slots.orders.iter().position(|(to, _)| *to == slot)?;
        self.orders.fetch_sub(1, Ordering::AcqRel);
        Some(slots.orders.remove(i).1)
    }

    /// The beats so far, in 31 bits: the count modulo 2^31.
    pub fn beats(&self) -> u32 {
        heard(self.beats.load(Ordering::Acquire) & !SHUTDOWN)
    }

    /// The beats since [`Pulse::beats`] gave `then`.
    pub fn beats_since(&self, then: u32) -> u32 {
        self.beats().wrapping_sub(then) & !(1 << 31)
    }

    /// A new listener for a connection of `user`, which has heard no beat
    /// yet but hears a shutdown that came before it.
    pub fn listen(&self, user: &str) -> Listener {
        let mut slots = self.slots();
        let slot = match slots.free.pop() {
            Some(slot) => slot,
            None => {
                slots.slots.push(Slot::default());
                slots.slots.len() - 1
            }
        };
        slots.slots[slot].user = user_hash(user);
        Listener { slot: slot as u32, heard: self.beats(), waker: Waker::noop().clone() }
    }

    fn register(&self, slot: usize, waker: &Waker) {
        self.slots().slots[slot].waker = Some(waker.clone());
    }

    fn release(&self, slot: usize) {
        let mut slots = self.slots();
        slots.slots[slot] = Slot::default();
        slots.free.push(slot);
        let before = slots.orders.len();
        slots.orders.retain(|(to, _)| *to != slot);
        self.orders.fetch_sub(before - slots.orders.len(), Ordering::AcqRel);
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
            return pulse.take_order(self.slot as usize).map(Signal::Order);
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
        let mut listener = pulse.listen("u");
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
        let mut listener = pulse.listen("u");
        assert_eq!(listener.poll(&pulse, &mut Context::from_waker(waker)), Some(Signal::Shutdown));
    }

    #[test]
    fn an_order_reaches_the_listeners_of_its_user_only() {
        let pulse = Pulse::default();
        let (count, other) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (waker, other_waker) = (Waker::from(count.clone()), Waker::from(other.clone()));
        let (mut cx, mut other_cx) = (Context::from_waker(&waker), Context::from_waker(&other_waker));
        let (mut first, mut second, mut stranger) = (pulse.listen("ann"), pulse.listen("ann"), pulse.listen("bob"));
        assert_eq!(first.poll(&pulse, &mut cx), None);
        assert_eq!(second.poll(&pulse, &mut cx), None);
        assert_eq!(stranger.poll(&pulse, &mut other_cx), None);
        let order = Order::Unsubscribe { room: "r".into() };
        assert_eq!(pulse.order("ann", order.clone()), 2);
        assert_eq!((woken(&count), woken(&other)), (2, 0));
        pulse.beat();
        // The beat first, then the order.
        assert_eq!(first.poll(&pulse, &mut cx), Some(Signal::Beat));
        let Some(Signal::Order(heard)) = first.poll(&pulse, &mut cx) else { panic!("no order") };
        assert_eq!((heard.user.as_str(), &heard.order), ("ann", &order));
        assert_eq!(first.poll(&pulse, &mut cx), None);
        // An order not heard is dropped with its listener.
        second.release(&pulse);
        assert_eq!(pulse.orders.load(Ordering::SeqCst), 0);
        assert_eq!(stranger.poll(&pulse, &mut other_cx), Some(Signal::Beat));
        assert_eq!(stranger.poll(&pulse, &mut other_cx), None);
    }

    #[test]
    fn slots_are_reused() {
        let pulse = Pulse::default();
        let first = pulse.listen("u");
        let slot = first.slot;
        first.release(&pulse);
        assert_eq!(pulse.listen("u").slot, slot);
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
