use std::collections::{HashMap, HashSet};

use super::SubscriberId;

/// The differ's memory for one order: chat message ids with their read flag, notification ids,
/// and what the bridge itself did in the chat (sent messages, mark-read requests), so that its
/// own actions are not announced back to the subscriber behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenState {
    pub chat: HashMap<i64, bool>,
    pub lifecycle: HashSet<i64>,
    /// Messages the bridge sent on the retailer's behalf, with the subscriber each came from
    /// (`None`: the admin API).
    pub sent: HashMap<i64, Option<SubscriberId>>,
    /// Chat messages that were seen unread when an `on_delivery` subscriber had the order's
    /// messages marked read, with those subscribers: their reading is that subscriber's doing.
    pub read_requested: HashMap<i64, Vec<SubscriberId>>,
}
