//! [`Memoized`]: a function whose results are cached under keys derived from its arguments
//! (diskcache's `@cache.memoize(name, typed, expire, tag)` decorator and `__cache_key__`).
//!
//! Invariant: the key of a call is `codec.encode_key(&(name, type_name?, args))`, a pure
//! function of the name, the arguments' value and (with `typed`) their Rust type name, so
//! every process computes the same key for the same call.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::codec::{Codec, Postcard};
use crate::error::{Error, Result};
use crate::fanout::FanoutCache;
use crate::index::Index;
use crate::typed::Store;

/// A function `f(&A) -> V` memoized in a [`Store`]. Made by [`Cache::memoized`],
/// [`FanoutCache::memoized`] or [`Index::memoized`].
///
/// diskcache's `ignore` (arguments left out of the key) has no counterpart: pass only the
/// arguments that matter as `A` and capture the rest in the closure. A panic in `f`
/// propagates and nothing is stored, as an exception does in diskcache.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = hoard_store::Cache::open(dir.path())?;
/// let calls = AtomicU32::new(0);
/// let area = cache.memoized("area", Some(Duration::from_secs(60)), None, |(w, h): &(u32, u32)| {
///     calls.fetch_add(1, Ordering::Relaxed);
///     w * h
/// });
/// assert_eq!(area.call(&(3, 4))?, 12);
/// assert_eq!(area.call(&(3, 4))?, 12); // from the cache
/// assert_eq!(calls.load(Ordering::Relaxed), 1);
/// assert!(cache.contains(&area.key_for(&(3, 4))?)?); // diskcache's __cache_key__
/// # Ok(())
/// # }
/// ```
pub struct Memoized<S, A: ?Sized, V, F, C = Postcard> {
    store: S,
    name: String,
    expire: Option<Duration>,
    tag: Option<String>,
    typed: bool,
    codec: C,
    f: F,
    types: std::marker::PhantomData<fn(&A) -> V>,
}

impl<S: std::fmt::Debug, A: ?Sized, V, F, C: std::fmt::Debug> std::fmt::Debug
    for Memoized<S, A, V, F, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memoized")
            .field("store", &self.store)
            .field("name", &self.name)
            .field("expire", &self.expire)
            .field("tag", &self.tag)
            .field("typed", &self.typed)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<S, A, V, F> Memoized<S, A, V, F, Postcard>
where
    S: Store,
    A: Serialize + ?Sized,
    V: Serialize + DeserializeOwned,
    F: Fn(&A) -> V,
{
    /// Memoizes `f` in `store` under `name`, results expiring after `expire`, tagged `tag`.
    pub fn new(store: S, name: &str, expire: Option<Duration>, tag: Option<&str>, f: F) -> Self {
        Memoized {
            store,
            name: name.to_string(),
            expire,
            tag: tag.map(String::from),
            typed: false,
            codec: Postcard,
            f,
            types: std::marker::PhantomData,
        }
    }
}

impl<S, A, V, F, C> Memoized<S, A, V, F, C>
where
    S: Store,
    A: Serialize + ?Sized,
    V: Serialize + DeserializeOwned,
    F: Fn(&A) -> V,
    C: Codec,
{
    /// With `typed`, the arguments' type name is part of the key, so `f(&1u32)` and
    /// `f(&1u64)` are cached apart (diskcache's `typed=True`; postcard encodes both alike).
    pub fn typed(mut self, typed: bool) -> Self {
        self.typed = typed;
        self
    }

    /// Encodes keys and results with `codec` instead of postcard.
    pub fn with_codec<D: Codec>(self, codec: D) -> Memoized<S, A, V, F, D> {
        Memoized {
            store: self.store,
            name: self.name,
            expire: self.expire,
            tag: self.tag,
            typed: self.typed,
            codec,
            f: self.f,
            types: std::marker::PhantomData,
        }
    }

    /// The raw key the result of `f(args)` is stored under (diskcache's `__cache_key__`).
    pub fn key_for(&self, args: &A) -> Result<Vec<u8>> {
        let type_name = self.typed.then(std::any::type_name::<A>);
        self.codec.encode_key(&(&self.name, type_name, args))
    }

    /// The cached result of `f(args)`, or `f(args)` computed, stored and returned. A stored
    /// value that does not decode as `V` counts as a miss and is replaced.
    pub fn call(&self, args: &A) -> Result<V> {
        let key = self.key_for(args)?;
        match self.store.raw_get(&key)?.map(|b| self.codec.decode(&b)) {
            Some(Ok(v)) => return Ok(v),
            Some(Err(Error::Decode(_))) | None => {}
            Some(Err(e)) => return Err(e),
        }
        let v = (self.f)(args);
        let bytes = self.codec.encode(&v)?;
        self.store
            .raw_set(&key, &bytes, self.expire, self.tag.as_deref())?;
        Ok(v)
    }

    /// Forgets the cached result of `f(args)`; whether there was one.
    pub fn forget(&self, args: &A) -> Result<bool> {
        self.store.raw_delete(&self.key_for(args)?)
    }
}

/// `memoized` on a [`Store`] type (the same for [`Cache`] and [`FanoutCache`]).
macro_rules! memoized_on {
    ($t:ty) => {
        impl $t {
            /// `f` memoized in this cache under `name` ([`Memoized`]; diskcache's
            /// `memoize` decorator). The key is derived from `name` and the arguments.
            pub fn memoized<A, V, F>(
                &self,
                name: &str,
                expire: Option<Duration>,
                tag: Option<&str>,
                f: F,
            ) -> Memoized<$t, A, V, F>
            where
                A: Serialize + ?Sized,
                V: Serialize + DeserializeOwned,
                F: Fn(&A) -> V,
            {
                Memoized::new(self.clone(), name, expire, tag, f)
            }
        }
    };
}
memoized_on!(Cache);
memoized_on!(FanoutCache);

impl Index {
    /// `f` memoized in this index under `name`, kept without expiry (diskcache's
    /// `Index.memoize`).
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let index = hoard_store::Index::open(dir.path())?;
    /// let fib = index.memoized("fib", |n: &u64| (1..=*n).product::<u64>());
    /// assert_eq!(fib.call(&5)?, 120);
    /// assert_eq!(index.len()?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn memoized<A, V, F>(&self, name: &str, f: F) -> Memoized<Cache, A, V, F>
    where
        A: Serialize + ?Sized,
        V: Serialize + DeserializeOwned,
        F: Fn(&A) -> V,
    {
        Memoized::new(self.cache().clone(), name, None, None, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual_cache;
    use std::cell::Cell;

    #[test]
    fn memoized_on_a_fanout_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FanoutCache::open(dir.path(), 4).unwrap();
        let upper = cache.memoized("upper", None, None, |s: &str| s.to_uppercase());
        assert_eq!(upper.call("ada").unwrap(), "ADA");
        assert_eq!(cache.len().unwrap(), 1);
        assert!(upper.forget("ada").unwrap());
    }

    #[test]
    fn keys_depend_on_name_args_and_typed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let f32_ = cache.memoized("f", None, None, |x: &u32| *x);
        let f64_ = cache.memoized("f", None, None, |x: &u64| *x as u32);
        let g = cache.memoized("g", None, None, |x: &u32| *x);
        let cases: Vec<(Vec<u8>, Vec<u8>, bool)> = vec![
            (f32_.key_for(&1).unwrap(), f32_.key_for(&1).unwrap(), true),
            (f32_.key_for(&1).unwrap(), f32_.key_for(&2).unwrap(), false),
            (f32_.key_for(&1).unwrap(), g.key_for(&1).unwrap(), false),
            // Untyped: postcard writes 1u32 and 1u64 alike, as diskcache treats 1 and 1.0.
            (f32_.key_for(&1).unwrap(), f64_.key_for(&1).unwrap(), true),
        ];
        for (i, (a, b, same)) in cases.into_iter().enumerate() {
            assert_eq!(a == b, same, "case {i}");
        }
        let t32 = cache.memoized("f", None, None, |x: &u32| *x).typed(true);
        let t64 = cache
            .memoized("f", None, None, |x: &u64| *x as u32)
            .typed(true);
        assert_ne!(t32.key_for(&1).unwrap(), t64.key_for(&1).unwrap());
        assert_ne!(t32.key_for(&1).unwrap(), f32_.key_for(&1).unwrap());
    }

    #[test]
    fn computes_once_per_arguments_until_expiry() {
        let (_dir, clock, cache) = manual_cache(1_000_000_000.0);
        let calls = Cell::new(0);
        let greet = cache.memoized(
            "greet",
            Some(Duration::from_secs(10)),
            Some("greetings"),
            |(name, n): &(String, usize)| {
                calls.set(calls.get() + 1);
                name.repeat(*n)
            },
        );
        let args = ("ab".to_string(), 2);
        assert_eq!(greet.call(&args).unwrap(), "abab");
        assert_eq!(greet.call(&args).unwrap(), "abab");
        assert_eq!(calls.get(), 1);
        assert_eq!(greet.call(&("x".into(), 1)).unwrap(), "x");
        assert_eq!(calls.get(), 2);
        clock.advance(11.0);
        assert_eq!(greet.call(&args).unwrap(), "abab");
        assert_eq!(calls.get(), 3);
        assert!(greet.forget(&args).unwrap());
        assert_eq!(cache.evict("greetings").unwrap(), 1); // ("x", 1) is left, tagged
    }
}
