//! Instance reuse, a component's opt-in (`instance_reuse = N` under
//! `[component.<id>.tool.berth]`): an instance serves up to N requests, one at a time,
//! instead of one. What survives from one request to the next is the guest's own state (its
//! linear memory, globals and tables, so its statics and heap) and the handles it still
//! holds; everything the host gives a request (its database transaction, outbox, outbound
//! calls, trace, deadline) is new for each. The default stays a fresh instance per request:
//! then nothing a request leaves behind, a secret in memory or a corrupted heap, can reach
//! the next.
//!
//! An instance is kept only after a request it served cleanly (answered below 500 and
//! committed). One that trapped, ran out of time or memory, failed in any way, or whose
//! memory has grown past `instance_reuse_memory_mb` is dropped, and every publish of a
//! component's versions (a deploy, canary, promote or rollback) drops the kept instances of
//! the versions it replaces, including any still serving a request when it happens.

use std::sync::{Mutex, PoisonError};

use wasmtime::Store;

use crate::config::Reuse;
use crate::state::{GuestLimits, InvocationState};

/// What a kept Store's data says about the instance's health.
pub trait Kept {
    fn limits(&self) -> &GuestLimits;
}

impl Kept for InvocationState {
    fn limits(&self) -> &GuestLimits {
        &self.limits
    }
}

/// The idle instances of one component version that opted in, with the exported functions
/// each was instantiated with (`B`, wasmtime's bindings).
pub struct Pool<B, T: 'static = InvocationState> {
    settings: Reuse,
    /// At most this many idle at once: the component's `max_concurrency`, the most it
    /// could have needed at one time. Each holds one of the engine's instance slots.
    capacity: usize,
    idle: Mutex<Idle<B, T>>,
}

struct Idle<B, T: 'static> {
    /// Bumped by [`Pool::clear`]: an instance leased before it is never kept.
    generation: u64,
    /// Most recently used last: its pages are the likeliest still in the CPU's caches.
    instances: Vec<Lease<B, T>>,
}

/// A Store for one request, and the instance in it when one was kept from an earlier
/// request (`bindings`); without one, the invocation instantiates into the Store and puts
/// the bindings here for [`Pool::keep`].
pub struct Lease<B, T: 'static = InvocationState> {
    pub store: Store<T>,
    pub bindings: Option<B>,
    /// Requests the instance had served before this one.
    served: u32,
    generation: u64,
}

impl<B, T: 'static> Lease<B, T> {
    /// A fresh Store of a component that does not reuse instances.
    pub fn fresh(store: Store<T>) -> Lease<B, T> {
        Lease {
            store,
            bindings: None,
            served: 0,
            generation: 0,
        }
    }

    /// Requests the instance served before this one: 0 for a fresh one.
    pub fn served(&self) -> u32 {
        self.served
    }
}

impl<B, T: Kept + 'static> Pool<B, T> {
    pub fn new(settings: Reuse, capacity: u32) -> Pool<B, T> {
        Pool {
            settings,
            capacity: capacity as usize,
            idle: Mutex::new(Idle {
                generation: 0,
                instances: Vec::new(),
            }),
        }
    }

    /// A kept instance, renewed for this request by `renew`; or else a fresh Store made by
    /// `fresh`, to instantiate into.
    pub fn lease(
        &self,
        fresh: impl FnOnce() -> Store<T>,
        renew: impl FnOnce(&mut Store<T>),
    ) -> Lease<B, T> {
        let (kept, generation) = {
            let mut idle = self.lock();
            (idle.instances.pop(), idle.generation)
        };
        match kept {
            Some(mut lease) => {
                renew(&mut lease.store);
                lease
            }
            None => Lease {
                generation,
                ..Lease::fresh(fresh())
            },
        }
    }

    /// Keeps the instance of a request that ended cleanly for the next one, unless it has
    /// served its share, its memory grew past the bound, the version was republished since
    /// it was leased, or enough are idle already. Says whether it was kept.
    pub fn keep(&self, mut lease: Lease<B, T>) -> bool {
        lease.served += 1;
        let limits = lease.store.data().limits();
        if lease.bindings.is_none()
            || lease.served >= self.settings.requests
            || limits.exceeded
            || limits.memory > self.settings.memory_bytes
        {
            return false;
        }
        let mut idle = self.lock();
        if lease.generation != idle.generation || idle.instances.len() >= self.capacity {
            return false;
        }
        idle.instances.push(lease);
        true
    }

    /// Drops every idle instance, and any leased now when it comes back: the version's
    /// place in the deployment changed.
    pub fn clear(&self) {
        let dropped = {
            let mut idle = self.lock();
            idle.generation += 1;
            std::mem::take(&mut idle.instances)
        };
        // Stores are dropped outside the lock: that returns their slots to the engine.
        drop(dropped);
    }

    /// Idle instances now.
    pub fn idle(&self) -> usize {
        self.lock().instances.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle<B, T>> {
        // Nothing panics while holding it; a poisoned pool is still a consistent list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Kept for GuestLimits {
        fn limits(&self) -> &GuestLimits {
            self
        }
    }

    const MIB: usize = 1 << 20;

    fn pool(requests: u32, capacity: u32) -> Pool<u32, GuestLimits> {
        Pool::new(
            Reuse {
                requests,
                memory_bytes: 8 * MIB,
            },
            capacity,
        )
    }

    /// Leases from `pool`, "instantiating" instance `id` when none is kept, and says which
    /// instance it got and how often it had served.
    fn lease(
        pool: &Pool<u32, GuestLimits>,
        engine: &wasmtime::Engine,
        id: u32,
    ) -> Lease<u32, GuestLimits> {
        let mut lease = pool.lease(|| Store::new(engine, GuestLimits::new(64 * MIB)), |_| {});
        lease.bindings.get_or_insert(id);
        lease
    }

    #[test]
    fn an_instance_serves_its_share_then_goes() {
        let engine = wasmtime::Engine::default();
        let pool = pool(3, 4);
        for served in 0..3 {
            let lease = lease(&pool, &engine, 1);
            assert_eq!((lease.bindings, lease.served()), (Some(1), served));
            assert_eq!(pool.keep(lease), served < 2, "kept after request {served}");
        }
        let next = lease(&pool, &engine, 2);
        assert_eq!((next.bindings, next.served()), (Some(2), 0), "a fresh one");
    }

    #[test]
    fn one_that_grew_past_the_bound_or_failed_is_not_kept() {
        let engine = wasmtime::Engine::default();
        let pool = pool(100, 4);
        let mut grown = lease(&pool, &engine, 1);
        grown.store.data_mut().memory = 9 * MIB;
        assert!(!pool.keep(grown), "over the memory bound");
        let mut failed = lease(&pool, &engine, 2);
        failed.store.data_mut().exceeded = true;
        assert!(!pool.keep(failed), "asked for more than its limit");
        let mut never_instantiated =
            pool.lease(|| Store::new(&engine, GuestLimits::new(MIB)), |_| {});
        never_instantiated.bindings = None;
        assert!(!pool.keep(never_instantiated));
        let mut at_bound = lease(&pool, &engine, 3);
        at_bound.store.data_mut().memory = 8 * MIB;
        assert!(pool.keep(at_bound), "at the bound is within it");
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn a_clear_drops_the_idle_and_refuses_those_leased_before_it() {
        let engine = wasmtime::Engine::default();
        let pool = pool(100, 2);
        let (a, b, c) = (
            lease(&pool, &engine, 1),
            lease(&pool, &engine, 2),
            lease(&pool, &engine, 3),
        );
        assert!(pool.keep(a));
        assert!(pool.keep(b));
        assert!(!pool.keep(c), "no more idle than max_concurrency");
        let in_flight = lease(&pool, &engine, 4);
        assert_eq!(in_flight.bindings, Some(2), "the most recently used first");
        pool.clear();
        assert_eq!(pool.idle(), 0);
        assert!(!pool.keep(in_flight), "leased before the clear");
        let after = lease(&pool, &engine, 5);
        assert_eq!(after.bindings, Some(5));
        assert!(pool.keep(after), "leased after it");
        let mut renewed = 0;
        let again = pool.lease(|| unreachable!("one is idle"), |_| renewed += 1);
        assert_eq!((again.bindings, renewed), (Some(5), 1));
    }
}
