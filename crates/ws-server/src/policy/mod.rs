//! Who may do what: who a connection speaks for (JWT), which pages may open
//! one (Origin), and the limits on connections and on the message rate.

pub mod auth;
pub mod limits;
pub mod origin;
