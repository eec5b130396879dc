//! Telling people: incidents that open when something goes wrong and resolve when it is put
//! right, email through a persisted outbox (an SMTP outage delays an alert, it never loses
//! one), and heartbeat pings so that a dead NAS is noticed from outside.

pub mod heartbeat;
pub mod incident;
pub mod mailer;
pub mod outbox;
pub(crate) mod render;

pub use incident::{Incident, Monitor};
pub use mailer::{Mailer, mailer_for};
pub use outbox::{Message, OUTBOX_ALARM, Outbox, Stuck};
