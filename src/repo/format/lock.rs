//! `locks/<id>`: who is using the repository, and how.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub host: String,
    pub pid: u32,
    pub username: String,
    /// When the lock was written or last refreshed.
    #[serde(with = "super::rfc3339")]
    pub time: Timestamp,
    pub exclusive: bool,
    /// What holds it ("backup", "check", …), for the message another process shows.
    pub operation: String,
}
