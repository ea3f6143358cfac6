//! One message of a room as its members receive it: numbered, serialized
//! once and encoded as a frame once for all of them; or a notice between
//! messages (a member joined or left), which carries the seq of the
//! message before it.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Instant;
use ws_proto::{DeflateConfig, Message, SharedMessage};

/// One message of a room, encoded once for every member.
#[derive(Debug)]
pub struct Delivery {
    /// Its place in the room.
    pub seq: u64,
    /// The frames every member is sent.
    pub frame: SharedMessage,
    /// When it was published, for the fan-out latency.
    pub published: Instant,
    /// The hash of who sent it and the id it gave, to know a retry.
    pub(super) retry_key: Option<NonZeroU64>,
    /// For a notice about a member, that member, who is not sent it.
    pub about: Option<Arc<str>>,
}

impl Delivery {
    /// `json`, the envelope of seq `seq`, for a room of `members`
    /// connections: encoded once for all of them, and compressed once with
    /// `deflate` for members that compress messages on their own. For one
    /// member (or none), it is compressed for each that takes it so, and
    /// keeps no compressed frame while the room holds it.
    pub fn new(seq: u64, json: String, deflate: Option<&DeflateConfig>, members: usize) -> Self {
        let message = Message::from(json);
        let frame = match members {
            0 | 1 => SharedMessage::for_one(&message, deflate),
            _ => SharedMessage::new(&message, deflate),
        };
        Delivery { seq, frame, published: Instant::now(), retry_key: None, about: None }
    }

    /// Whether it is a notice, not a message.
    pub fn is_notice(&self) -> bool {
        self.about.is_some()
    }
}
