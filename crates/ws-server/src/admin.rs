//! What the server API asks of every server: disconnect a user, take a user
//! out of a room, tell the rooms that have members, tell about itself. In
//! memory the one server carries a command out; with `--redis` every server
//! of the cluster does (cluster/mod.rs broadcasts it) and each answers with
//! a [`Report`], which the API adds up.

use crate::hub::Hub;
use crate::policy::limits::ConnectionLimits;
use crate::pulse::{Order, Pulse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A command of the server API, for every server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Command {
    /// Close every connection of `user` with `code` and `reason`.
    Disconnect {
        /// The user.
        user: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Take every connection of `user` out of `room`.
    Unsubscribe {
        /// The user.
        user: String,
        /// The room.
        room: String,
    },
    /// The rooms with members.
    Rooms,
    /// The server and its connections.
    Info,
}

/// One server's answer to a [`Command`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The server: its instance id.
    pub server: String,
    /// The connections the order reached; for `info`, those open.
    pub connections: usize,
    /// For `info`, the rooms with members here.
    #[serde(default)]
    pub room_count: usize,
    /// For `rooms`, the rooms with members here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<Occupied>,
}

/// A room with members on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupied {
    /// The room.
    pub room: String,
    /// Its members' names.
    pub members: Vec<String>,
    /// Its connections.
    pub connections: u64,
}

/// What one server carries the commands out with.
#[derive(Debug, Clone)]
pub struct Local {
    /// The rooms.
    pub hub: Arc<Hub>,
    /// The sessions' pulse, which carries orders to them.
    pub pulse: Arc<Pulse>,
    /// The hub connections.
    pub limits: Arc<ConnectionLimits>,
}

impl Local {
    /// Carries `command` out on this server.
    pub fn carry_out(&self, command: &Command) -> Report {
        let mut report = Report { server: self.hub.instance().to_owned(), ..Report::default() };
        match command {
            Command::Disconnect { user, code, reason } => {
                let order = Order::Disconnect { code: *code, reason: reason.clone() };
                report.connections = self.pulse.order(user, order);
            }
            Command::Unsubscribe { user, room } => {
                report.connections = self.pulse.order(user, Order::Unsubscribe { room: room.clone() });
            }
            Command::Rooms => {
                let occupancy = self.hub.occupancy().into_iter();
                report.rooms = occupancy
                    .map(|(room, members, connections)| Occupied {
                        room: room.to_string(),
                        members: members.iter().map(|m| m.to_string()).collect(),
                        connections,
                    })
                    .collect();
            }
            Command::Info => {
                report.connections = self.limits.count();
                report.room_count = self.hub.occupied();
            }
        }
        report
    }
}
