//! zlib state lent for the length of one message (RFC 7692 section 7.2,
//! with no context takeover): each thread keeps a few reset compressors and
//! decompressors, so that a connection that keeps no context borrows one
//! for a message and gives it back, rather than allocate and free some
//! 300 KiB each time (which also leaves the allocator dirty pages to hold).
//!
//! A state goes back to the pool of the thread the message ends on. The
//! pool is bounded: past it, a returned state is freed.

use std::cell::RefCell;

/// Compressors kept per thread. A message is compressed in one call, so a
/// thread needs one per configuration it compresses with at a time.
const DEFLATES_KEPT: usize = 2;
/// Decompressors kept per thread: one is held from a message's first frame
/// to its last, which may arrive over several reads while other connections
/// on the thread receive theirs.
const INFLATES_KEPT: usize = 4;

thread_local! {
    /// Reset compressors with their settings, the most recently returned last.
    static DEFLATES: RefCell<Vec<(zlib_rs::DeflateConfig, Box<zlib_rs::Deflate>)>> = const { RefCell::new(Vec::new()) };
    /// Reset decompressors of raw DEFLATE with a 15-bit window. Boxed as
    /// the connections hold them, so lending one moves a pointer.
    #[allow(clippy::vec_box)]
    static INFLATES: RefCell<Vec<Box<zlib_rs::Inflate>>> = const { RefCell::new(Vec::new()) };
}

/// A compressor with `config`, from this thread's pool if it has one.
pub(super) fn take_deflate(config: zlib_rs::DeflateConfig) -> Box<zlib_rs::Deflate> {
    let pooled = DEFLATES.with_borrow_mut(|pool| {
        let at = pool.iter().rposition(|(kept, _)| *kept == config)?;
        Some(pool.remove(at).1)
    });
    pooled.unwrap_or_else(|| Box::new(zlib_rs::Deflate::new_with_config(config)))
}

/// Gives back a compressor made with `config`, reset for its next message.
/// The pool full, the oldest is freed.
pub(super) fn give_deflate(config: zlib_rs::DeflateConfig, mut state: Box<zlib_rs::Deflate>) {
    state.reset();
    DEFLATES.with_borrow_mut(|pool| {
        if pool.len() == DEFLATES_KEPT {
            pool.remove(0);
        }
        pool.push((config, state));
    });
}

/// A decompressor of raw DEFLATE with a 15-bit window, which reads a stream
/// made with any smaller window; zlib-rs allocates the full window whatever
/// the bits, so nothing is saved by asking for fewer.
pub(super) fn take_inflate() -> Box<zlib_rs::Inflate> {
    INFLATES.with_borrow_mut(Vec::pop).unwrap_or_else(|| Box::new(zlib_rs::Inflate::new(false, 15)))
}

/// Gives back a decompressor, reset for its next message; the pool full, it is freed.
pub(super) fn give_inflate(mut state: Box<zlib_rs::Inflate>) {
    state.reset(false);
    INFLATES.with_borrow_mut(|pool| {
        if pool.len() < INFLATES_KEPT {
            pool.push(state);
        }
    });
}

/// How many compressors and decompressors this thread's pool holds.
#[cfg(test)]
pub(super) fn kept() -> (usize, usize) {
    (DEFLATES.with_borrow(Vec::len), INFLATES.with_borrow(Vec::len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address<T>(state: &T) -> *const T {
        state
    }

    #[test]
    fn a_state_given_back_is_lent_again_and_the_pool_is_bounded() {
        let inflate = take_inflate();
        let at = address(&*inflate);
        give_inflate(inflate);
        assert_eq!(address(&*take_inflate()), at, "reused, not allocated");

        let many: Vec<_> = (0..INFLATES_KEPT + 2).map(|_| take_inflate()).collect();
        many.into_iter().for_each(give_inflate);
        assert_eq!(kept().1, INFLATES_KEPT);

        let config = |bits: i32| zlib_rs::DeflateConfig { window_bits: -bits, ..zlib_rs::DeflateConfig::default() };
        let deflate = take_deflate(config(15));
        let at = address(&*deflate);
        give_deflate(config(15), deflate);
        let other = take_deflate(config(12));
        assert_eq!(kept().0, 1, "another configuration is not lent this one");
        give_deflate(config(12), other);
        let deflate = take_deflate(config(15));
        assert_eq!((address(&*deflate), kept().0), (at, 1));
        give_deflate(config(15), deflate);
        give_deflate(config(10), take_deflate(config(10)));
        assert_eq!(kept().0, DEFLATES_KEPT);
        let _twelve = take_deflate(config(12));
        assert_eq!(kept().0, DEFLATES_KEPT, "the oldest, 12 bits, went first: a new one was made");
    }
}
