//! Which local actor answers at which path, and for which message types.
//!
//! An entry keeps two route tables built once at registration: a typed one
//! for local callers (no serialisation, no boxing per message) and a wire one,
//! keyed by `Request::TYPE`, that decodes postcard payloads from a transport.

use rustc_hash::FxHashMap;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use abi_protocol::{Request, codec};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use ractor::{ActorCell, ActorId, ActorRef, Message};

use crate::{AskError, Call, ReplyTo};

/// Sends a typed call into the actor's mailbox; hands the call back if the mailbox is closed.
pub(crate) type LocalRoute<R> = Box<dyn Fn(Call<R>) -> Result<(), ()> + Send + Sync>;

/// Answers a request in the caller's task from state the actor shares, without a mailbox hop
/// (as Erlang processes read an ETS table without messaging its owner): for reads of
/// concurrent structures. Hands the request back when the actor itself must answer it.
pub type DirectRead<R> =
    std::sync::Arc<dyn Fn(R) -> Result<BoxFuture<'static, <R as Request>::Reply>, R> + Send + Sync>;

/// Decodes a wire payload, delivers it, and resolves to the encoded reply.
type WireRoute = Box<
    dyn Fn(&[u8], Instant, bool) -> Result<BoxFuture<'static, Result<Vec<u8>, AskError>>, AskError>
        + Send
        + Sync,
>;

/// A registered actor's mailbox with its route tables.
pub(crate) struct Mailbox {
    pub(crate) actor: ActorId,
    /// Message metrics of this actor, looked up on first use.
    pub(crate) stats: std::sync::OnceLock<crate::metrics::ActorStats>,
    /// Its path as text, made on first use: the attribute of the spans of its
    /// direct reads, shared instead of formatted per traced read.
    pub(crate) path_text: std::sync::OnceLock<Arc<str>>,
    local: FxHashMap<TypeId, Box<dyn Any + Send + Sync>>,
    direct: FxHashMap<TypeId, Box<dyn Any + Send + Sync>>,
    wire: FxHashMap<&'static str, WireRoute>,
}

impl Mailbox {
    pub(crate) fn direct<R: Request>(&self) -> Option<&DirectRead<R>> {
        if self.direct.is_empty() {
            return None;
        }
        self.direct
            .get(&TypeId::of::<R>())
            .and_then(|r| r.downcast_ref::<DirectRead<R>>())
    }

    pub(crate) fn local<R: Request>(&self) -> Option<&LocalRoute<R>> {
        self.local
            .get(&TypeId::of::<R>())
            .and_then(|r| r.downcast_ref::<LocalRoute<R>>())
    }

    pub(crate) fn wire(&self, type_name: &str) -> Option<&WireRoute> {
        self.wire.get(type_name)
    }
}

/// What a child's start function returns: the started actor and, when it is
/// addressable, the request types it serves.
pub struct Started {
    pub(crate) cell: ActorCell,
    pub(crate) mailbox: Option<Mailbox>,
    pub(crate) supervisor: Option<crate::SupervisorRef>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("actor", &self.cell.get_id())
            .finish()
    }
}

/// Builder returned by [`Started::new`]: declare each served request with [`Serving::serves`].
pub struct Serving<M: Message> {
    actor: ActorRef<M>,
    mailbox: Mailbox,
}

impl Started {
    /// An actor to supervise; chain `.serves::<R>()` to make it addressable by its path.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<M: Message>(actor: ActorRef<M>) -> Serving<M> {
        let id = actor.get_id();
        Serving {
            actor,
            mailbox: Mailbox {
                actor: id,
                stats: std::sync::OnceLock::new(),
                path_text: std::sync::OnceLock::new(),
                local: FxHashMap::default(),
                direct: FxHashMap::default(),
                wire: FxHashMap::default(),
            },
        }
    }

    /// An actor that is supervised but not addressable.
    pub fn unaddressed(cell: ActorCell) -> Self {
        Self {
            cell,
            mailbox: None,
            supervisor: None,
        }
    }
}

impl<M: Message> Serving<M> {
    /// Routes requests of type `R` to this actor.
    pub fn serves<R: Request>(mut self) -> Self
    where
        M: From<Call<R>>,
    {
        let local_actor = self.actor.clone();
        let local: LocalRoute<R> =
            Box::new(move |call: Call<R>| local_actor.send_message(M::from(call)).map_err(|_| ()));
        self.mailbox.local.insert(
            TypeId::of::<R>(),
            Box::new(local) as Box<dyn Any + Send + Sync>,
        );

        let wire_actor = self.actor.clone();
        let wire: WireRoute = Box::new(move |bytes: &[u8], deadline: Instant, want_reply: bool| {
            let req: R =
                codec::decode(R::TYPE, bytes).map_err(|e| AskError::Codec(e.to_string()))?;
            let path_hint = wire_actor.get_id().to_string();
            if !want_reply {
                wire_actor
                    .send_message(M::from(Call::new(req, ReplyTo::new(None, deadline))))
                    .map_err(|_| AskError::ActorStopped(path_hint.clone()))?;
                return Ok(Box::pin(async { Ok(Vec::new()) }) as BoxFuture<'static, _>);
            }
            let (tx, rx) = crate::reply::channel::<R::Reply>();
            wire_actor
                .send_message(M::from(Call::new(req, ReplyTo::new(Some(tx), deadline))))
                .map_err(|_| AskError::ActorStopped(path_hint.clone()))?;
            Ok(Box::pin(async move {
                let reply = match tokio::time::timeout_at(deadline.into(), rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => return Err(AskError::ActorStopped(path_hint)),
                    Err(_) => {
                        return Err(AskError::Timeout {
                            path: path_hint,
                            timeout_ms: 0,
                        });
                    }
                };
                codec::encode(R::TYPE, &reply).map_err(|e| AskError::Codec(e.to_string()))
            }) as BoxFuture<'static, _>)
        });
        self.mailbox.wire.insert(R::TYPE, wire);
        self
    }
}

impl<M: Message> Serving<M> {
    /// Lets local untraced asks of type `R` run `read` in the caller's task instead of
    /// queueing in the mailbox; what `read` declines goes to the actor (which must also
    /// [`Serving::serves`] `R`). Remote and traced asks always go through the mailbox.
    pub fn reads_directly<R: Request>(mut self, read: DirectRead<R>) -> Self
    where
        M: From<Call<R>>,
    {
        self.mailbox.direct.insert(
            TypeId::of::<R>(),
            Box::new(read) as Box<dyn Any + Send + Sync>,
        );
        self
    }
}

impl<M: Message> From<Serving<M>> for Started {
    fn from(s: Serving<M>) -> Self {
        Started {
            cell: s.actor.get_cell(),
            mailbox: Some(s.mailbox),
            supervisor: None,
        }
    }
}

/// The local name -> mailbox table. Names are the path below the node (`vector/docs`).
///
/// Asks look names up in a per-thread snapshot of the table, checked against a version
/// number: a lookup then takes no lock and touches no shared cache line but the version's
/// (written only when actors come and go). Changes copy the table.
pub struct Registry {
    // Fx: names are short and trusted (our own paths); SipHash cost shows in every ask.
    entries: RwLock<Arc<Table>>,
    /// Bumped (under the write lock) after every change of `entries`.
    version: AtomicU64,
    /// Tells this registry's snapshots from another node's in the same thread.
    id: u64,
}

type Table = FxHashMap<String, Arc<Mailbox>>;

/// A thread's copy of one registry's table at one version.
struct Snapshot {
    registry: u64,
    version: u64,
    table: Arc<Table>,
}

thread_local! {
    static SNAPSHOT: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
}

impl Default for Registry {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            entries: RwLock::default(),
            version: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("entries", &self.entries.read().len())
            .finish()
    }
}

impl Registry {
    fn change(&self, edit: impl FnOnce(&mut Table)) {
        let mut entries = self.entries.write();
        edit(Arc::make_mut(&mut entries));
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn insert(&self, name: String, mailbox: Mailbox) {
        let mailbox = Arc::new(mailbox);
        self.change(|t| {
            t.insert(name, mailbox);
        });
    }

    /// Removes `name` only if it still belongs to `actor` (a restarted
    /// successor may already have registered under the same name).
    pub(crate) fn remove_if(&self, name: &str, actor: ActorId) {
        if self
            .entries
            .read()
            .get(name)
            .is_some_and(|m| m.actor == actor)
        {
            self.change(|t| {
                if t.get(name).is_some_and(|m| m.actor == actor) {
                    t.remove(name);
                }
            });
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Mailbox>> {
        self.entries.read().get(name).cloned()
    }

    /// Runs `f` on the mailbox, found in this thread's snapshot of the table (refreshed
    /// when the table changed): the local ask path only enqueues a message there.
    pub(crate) fn with<T>(&self, name: &str, f: impl FnOnce(Option<&Mailbox>) -> T) -> T {
        let version = self.version.load(Ordering::Acquire);
        SNAPSHOT.with(|cell| {
            let fresh = matches!(&*cell.borrow(),
                Some(s) if s.registry == self.id && s.version == version);
            if !fresh {
                let Ok(mut slot) = cell.try_borrow_mut() else {
                    // Called from inside `f` of an outer lookup: read the table itself.
                    return f(self.entries.read().get(name).map(|m| &**m));
                };
                // The table read here is at least as new as `version`.
                let table = self.entries.read().clone();
                *slot = Some(Snapshot {
                    registry: self.id,
                    version,
                    table,
                });
            }
            let snapshot = cell.borrow();
            let mailbox = snapshot
                .as_ref()
                .and_then(|s| s.table.get(name))
                .map(|m| &**m);
            f(mailbox)
        })
    }

    /// Whether an actor is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.read().contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.read().keys().cloned().collect();
        v.sort();
        v
    }
}
