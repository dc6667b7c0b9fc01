//! Who may speak VRRP in Kubernetes mode, between this node's groups and the Kubernetes task:
//! the sources allowed to advertise (learnt from the cluster), the sources this node's groups
//! send from (published for the other nodes), the refused speakers (reported as Events), and
//! who each group takes for its master (the endpoint rule of `Local` Services follows it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

/// The sources allowed to send adverts; `None` until the cluster has been listed (everyone is
/// heard until then, as without Kubernetes).
pub type Allowed = Option<Arc<BTreeSet<IpAddr>>>;

/// One of this node's groups: interface, VRID and whether it is IPv6.
pub type GroupKey = (String, u8, bool);

/// An advert refused because its source is not an allowed speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// The group's VRID.
    pub vrid: u8,
    /// The group's interface.
    pub interface: String,
    /// Who sent it.
    pub source: IpAddr,
}

/// Refusals queued for the Kubernetes task beyond this are dropped (they are counted anyway).
const FOREIGN_QUEUE: usize = 64;

/// The Kubernetes task's ends.
#[derive(Debug)]
pub struct KubeEnds {
    /// Publishes the allowed sources.
    pub allowed: watch::Sender<Allowed>,
    /// The source each of this node's groups sends from.
    pub own: watch::Receiver<BTreeMap<GroupKey, IpAddr>>,
    /// Refused speakers, to report.
    pub foreign: mpsc::Receiver<Foreign>,
    /// Each group's master, as far as the group knows (its source address; groups that know
    /// none are absent).
    pub masters: watch::Receiver<BTreeMap<GroupKey, IpAddr>>,
}

/// The groups' ends (cloned for each group).
#[derive(Debug, Clone)]
pub struct GroupEnds {
    /// The allowed sources.
    pub allowed: watch::Receiver<Allowed>,
    /// Where a group publishes the source it sends from.
    pub own: Arc<watch::Sender<BTreeMap<GroupKey, IpAddr>>>,
    /// Where a group reports a refused speaker (`try_send`: never blocks a group).
    pub foreign: mpsc::Sender<Foreign>,
    /// Where a group publishes its master.
    pub masters: Arc<watch::Sender<BTreeMap<GroupKey, IpAddr>>>,
}

/// Connected ends for the Kubernetes task and the groups.
pub fn channels() -> (KubeEnds, GroupEnds) {
    let (allowed_tx, allowed_rx) = watch::channel(None);
    let (own_tx, own_rx) = watch::channel(BTreeMap::new());
    let (foreign_tx, foreign_rx) = mpsc::channel(FOREIGN_QUEUE);
    let (masters_tx, masters_rx) = watch::channel(BTreeMap::new());
    (
        KubeEnds {
            allowed: allowed_tx,
            own: own_rx,
            foreign: foreign_rx,
            masters: masters_rx,
        },
        GroupEnds {
            allowed: allowed_rx,
            own: Arc::new(own_tx),
            foreign: foreign_tx,
            masters: Arc::new(masters_tx),
        },
    )
}
