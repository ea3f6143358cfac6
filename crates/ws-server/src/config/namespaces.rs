//! Namespaces: the part of a room's name before its first `:` names its
//! namespace (`feed:btc` is in `feed`), whose options rule its rooms: who
//! may publish, the history, whether `since` recovery and `presence` are
//! offered, whether members are told of joins and leaves, and the limits
//! of a message. A room without `:` is in the default namespace, whose
//! options are the top-level settings. The TOML file lists the others as
//! `[namespace.NAME]` tables; an option a table leaves out is the default
//! namespace's. A room whose namespace is not listed has the default
//! namespace's options, or is refused with `unknown_namespace` when
//! `unknown-namespaces = "refuse"`.

use crate::envelope::{EnvelopeError, Limits};
use crate::hub::History;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Who may publish to a namespace's rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// Every member.
    Members,
    /// Only the server, through the HTTP API: a client's publish is `forbidden`.
    Server,
}

/// What happens to a room whose namespace is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownNamespaces {
    /// It has the default namespace's options.
    Default,
    /// It is refused with `unknown_namespace`.
    Refuse,
}

/// The options of one namespace's rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Who may publish.
    pub publish: Publish,
    /// What each room keeps for recovery and for members that fall behind.
    pub history: History,
    /// Whether a join may ask for a replay with `since`.
    pub recovery: bool,
    /// Whether members may ask who is present.
    pub presence: bool,
    /// Whether members are told when a member comes into the room (its
    /// first connection there) or leaves it (its last).
    pub join_leave_events: bool,
    /// The bounds of a message's content and data.
    pub limits: Limits,
}

/// Every namespace of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// The default namespace: rooms without `:`, and those of unlisted
    /// namespaces unless they are refused.
    pub default: Namespace,
    /// The namespaces the file lists, by name.
    pub listed: BTreeMap<String, Namespace>,
    /// What happens to a room whose namespace is not listed.
    pub unknown: UnknownNamespaces,
}

impl Namespaces {
    /// The options of `room`'s namespace, or `unknown_namespace`.
    pub fn of(&self, room: &str) -> Result<&Namespace, EnvelopeError> {
        let Some((name, _)) = room.split_once(':') else { return Ok(&self.default) };
        match (self.listed.get(name), self.unknown) {
            (Some(namespace), _) => Ok(namespace),
            (None, UnknownNamespaces::Default) => Ok(&self.default),
            (None, UnknownNamespaces::Refuse) => Err(EnvelopeError::new(
                "unknown_namespace",
                format!("room {room} is in namespace {name}, which this server does not have"),
            )),
        }
    }

    /// The fewest messages any namespace's rooms keep in their history.
    pub fn least_history(&self) -> usize {
        self.listed.values().chain([&self.default]).map(|namespace| namespace.history.len).min().unwrap_or(0)
    }

    /// The options of `room`'s namespace, or the default's for a room
    /// refused (which no member or message can be in).
    pub fn rules(&self, room: &str) -> &Namespace {
        self.of(room).unwrap_or(&self.default)
    }

    /// The effective settings of every namespace, as a TOML file would give them.
    pub fn describe(&self) -> String {
        let unknown = match self.unknown {
            UnknownNamespaces::Default => "default",
            UnknownNamespaces::Refuse => "refuse",
        };
        let mut text = format!("# rooms of namespaces not listed: {unknown}\nunknown-namespaces = \"{unknown}\"\n");
        text += "\n# the default namespace: rooms without ':'\n";
        self.default.describe(&mut text);
        for (name, namespace) in &self.listed {
            text += &format!("\n[namespace.{name}]\n");
            namespace.describe(&mut text);
        }
        text
    }
}

impl Namespace {
    /// Appends its options as TOML lines.
    fn describe(&self, text: &mut String) {
        let publish = match self.publish {
            Publish::Members => "members",
            Publish::Server => "server",
        };
        let age = self.history.max_age.map_or_else(
            || "# history-max-age: none, as long as history allows".to_owned(),
            |age| format!("history-max-age = {}", age.as_secs_f64()),
        );
        let (history, recovery, presence, events) =
            (self.history.len, self.recovery, self.presence, self.join_leave_events);
        let (chars, bytes) = (self.limits.content_chars, self.limits.data_bytes);
        // Writing to a String cannot fail.
        let _ = writeln!(text, "publish = \"{publish}\"\nhistory = {history}\n{age}");
        let _ = writeln!(text, "recovery = {recovery}\npresence = {presence}\njoin-leave-events = {events}");
        let _ = writeln!(text, "max-content-chars = {chars}\nmax-data-bytes = {bytes}");
    }
}

/// A `[namespace.NAME]` table of the TOML file: each option it leaves out
/// is the default namespace's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NamespaceTable {
    publish: Option<Publish>,
    history: Option<usize>,
    history_max_age: Option<Seconds>,
    recovery: Option<bool>,
    presence: Option<bool>,
    join_leave_events: Option<bool>,
    max_content_chars: Option<usize>,
    max_data_bytes: Option<usize>,
}

impl NamespaceTable {
    /// The namespace it makes, over the `default` one.
    pub fn over(&self, default: &Namespace) -> Namespace {
        Namespace {
            publish: self.publish.unwrap_or(default.publish),
            history: History {
                len: self.history.unwrap_or(default.history.len),
                max_age: self.history_max_age.map_or(default.history.max_age, |s| Some(s.0)),
            },
            recovery: self.recovery.unwrap_or(default.recovery),
            presence: self.presence.unwrap_or(default.presence),
            join_leave_events: self.join_leave_events.unwrap_or(default.join_leave_events),
            limits: Limits {
                content_chars: self.max_content_chars.unwrap_or(default.limits.content_chars),
                data_bytes: self.max_data_bytes.unwrap_or(default.limits.data_bytes),
            },
        }
    }
}

/// The `[namespace.NAME]` tables of a TOML file, every other setting aside.
#[derive(Debug, Default, Deserialize)]
pub struct NamespaceTables {
    /// The tables, by namespace name.
    #[serde(default)]
    pub namespace: BTreeMap<String, NamespaceTable>,
}

/// Whether `name` may name a namespace: what may start a room's name, without `:`.
pub fn is_namespace_name(name: &str) -> bool {
    crate::envelope::is_room_name(name) && !name.contains(':')
}

/// A positive number of seconds, in a namespace's table.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
struct Seconds(Duration);

impl TryFrom<f64> for Seconds {
    type Error = String;

    fn try_from(secs: f64) -> Result<Self, String> {
        match secs {
            secs if secs > 0.0 && secs.is_finite() => {
                Duration::try_from_secs_f64(secs).map(Seconds).map_err(|e| e.to_string())
            }
            _ => Err(format!("{secs} is not a positive number of seconds")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(publish: Publish) -> Namespace {
        Namespace {
            publish,
            history: History { len: 100, max_age: None },
            recovery: true,
            presence: true,
            join_leave_events: false,
            limits: Limits { content_chars: 1000, data_bytes: 16384 },
        }
    }

    #[test]
    fn a_room_is_in_the_namespace_before_its_first_colon() {
        let mut listed = BTreeMap::new();
        listed.insert("feed".to_owned(), namespace(Publish::Server));
        let mut namespaces =
            Namespaces { default: namespace(Publish::Members), listed, unknown: UnknownNamespaces::Default };
        assert_eq!(namespaces.of("feed:btc").unwrap().publish, Publish::Server);
        assert_eq!(namespaces.of("feed:btc:usd").unwrap().publish, Publish::Server);
        assert_eq!(namespaces.of("feed").unwrap().publish, Publish::Members, "no ':', the default namespace");
        assert_eq!(namespaces.of("chat:x").unwrap().publish, Publish::Members, "unlisted: the default's options");
        namespaces.unknown = UnknownNamespaces::Refuse;
        assert_eq!(namespaces.of("chat:x").unwrap_err().code, "unknown_namespace");
        assert_eq!(namespaces.of("general").unwrap().publish, Publish::Members);
        assert_eq!(namespaces.rules("chat:x").publish, Publish::Members);
    }

    #[test]
    fn a_table_takes_the_default_namespaces_options_it_leaves_out() {
        let table: NamespaceTable =
            toml::from_str("publish = \"server\"\nhistory-max-age = 1.5\npresence = false").unwrap();
        let made = table.over(&namespace(Publish::Members));
        let expected = Namespace {
            publish: Publish::Server,
            history: History { len: 100, max_age: Some(Duration::from_millis(1500)) },
            presence: false,
            ..namespace(Publish::Members)
        };
        assert_eq!(made, expected);
        for bad in ["presense = false", "history = -1", "history-max-age = 0", "publish = \"anyone\""] {
            assert!(toml::from_str::<NamespaceTable>(bad).is_err(), "{bad}");
        }
    }
}
