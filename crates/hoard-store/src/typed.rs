//! [`Typed`]: a view of a [`Cache`], [`FanoutCache`] or [`Index`] whose keys and values are
//! serde types, encoded by a [`Codec`] (diskcache's pickled keys and values).
//!
//! Invariant: a typed key is `codec.encode_key(key)`, the same bytes for the same value in
//! every process, so typed and raw handles on one directory meet on those bytes; values go
//! through the codec's one decoder, and bytes of another type read as [`Error::Decode`].

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::codec::{Codec, Postcard};
use crate::error::{Error, Result};
use crate::fanout::FanoutCache;
use crate::index::Index;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Cache {}
    impl Sealed for crate::FanoutCache {}
}

/// A byte-level store a [`Typed`] view or a [`Memoized`](crate::Memoized) function works
/// on: [`Cache`] or [`FanoutCache`] (sealed; an [`Index`] lends its cache).
///
/// ```
/// use hoard_store::{Cache, Store};
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// fn count_hit(store: &impl Store) -> hoard_store::Result<Option<i64>> {
///     store.raw_incr(b"hits", 1, Some(0))
/// }
/// assert_eq!(count_hit(&Cache::open(dir.path())?)?, Some(1));
/// # Ok(())
/// # }
/// ```
pub trait Store: sealed::Sealed + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// [`Cache::get`].
    fn raw_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// [`Cache::set`]; `false` when a [`FanoutCache`] shard stayed busy past its fail-soft
    /// timeout and nothing was stored (always `true` for a [`Cache`]).
    fn raw_set(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool>;
    /// [`Cache::add`].
    fn raw_add(
        &self,
        key: &[u8],
        value: &[u8],
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool>;
    /// [`Cache::pop`].
    fn raw_pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// [`Cache::delete`].
    fn raw_delete(&self, key: &[u8]) -> Result<bool>;
    /// [`Cache::contains`].
    fn raw_contains(&self, key: &[u8]) -> Result<bool>;
    /// [`Cache::touch`].
    fn raw_touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool>;
    /// [`Cache::incr`]; `None` when a [`FanoutCache`] shard stayed busy past its fail-soft
    /// timeout (always `Some` for a [`Cache`]).
    fn raw_incr(&self, key: &[u8], delta: i64, default: Option<i64>) -> Result<Option<i64>>;
}

/// `$set` and `$incr` turn a [`Cache`] result into the fail-soft shape a [`FanoutCache`]
/// returns (`bool` stored, `Option` counter).
macro_rules! store_impl {
    ($t:ty, $set:expr, $incr:expr) => {
        impl Store for $t {
            fn raw_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
                self.get(key)
            }
            fn raw_set(
                &self,
                key: &[u8],
                value: &[u8],
                expire: Option<Duration>,
                tag: Option<&str>,
            ) -> Result<bool> {
                self.set(key, value, expire, tag).map($set)
            }
            fn raw_add(
                &self,
                key: &[u8],
                value: &[u8],
                expire: Option<Duration>,
                tag: Option<&str>,
            ) -> Result<bool> {
                self.add(key, value, expire, tag)
            }
            fn raw_pop(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
                self.pop(key)
            }
            fn raw_delete(&self, key: &[u8]) -> Result<bool> {
                self.delete(key)
            }
            fn raw_contains(&self, key: &[u8]) -> Result<bool> {
                self.contains(key)
            }
            fn raw_touch(&self, key: &[u8], expire: Option<Duration>) -> Result<bool> {
                self.touch(key, expire)
            }
            fn raw_incr(
                &self,
                key: &[u8],
                delta: i64,
                default: Option<i64>,
            ) -> Result<Option<i64>> {
                self.incr(key, delta, default).map($incr)
            }
        }
    };
}
store_impl!(Cache, |()| true, Some);
store_impl!(FanoutCache, |stored| stored, |n| n);

/// Keys of type `K` and values of type `V` over a [`Store`], encoded by `C` (postcard by
/// default). Cheap to clone. Made by [`Cache::typed`], [`FanoutCache::typed`],
/// [`Index::typed`]; [`Typed::with_codec`] picks another codec.
///
/// ```
/// use hoard_store::{Cache, Json};
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct User { name: String, age: u8 }
/// # fn main() -> hoard_store::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let cache = Cache::open(dir.path())?;
/// let users = cache.typed::<(u32, String), User>();
/// let key = (1, "eu".to_string());
/// users.set(&key, &User { name: "ada".into(), age: 36 }, None, Some("users"))?;
/// assert_eq!(users.get(&key)?.map(|u| u.age), Some(36));
/// assert!(!users.add(&key, &User { name: "bob".into(), age: 1 }, None, None)?);
/// // JSON instead of postcard; raw bytes stay available on the cache.
/// let json = cache.typed::<str, Vec<u8>>().with_codec(Json);
/// json.set("k", &vec![1, 2], None, None)?;
/// assert_eq!(cache.get(&json.key("k")?)?, Some(b"\x02[1,2]".to_vec()));
/// # Ok(())
/// # }
/// ```
pub struct Typed<S, K: ?Sized, V, C = Postcard> {
    store: S,
    codec: C,
    types: PhantomData<fn(&K) -> V>,
}

impl<S: Clone, K: ?Sized, V, C: Clone> Clone for Typed<S, K, V, C> {
    fn clone(&self) -> Self {
        Typed {
            store: self.store.clone(),
            codec: self.codec.clone(),
            types: PhantomData,
        }
    }
}

impl<S: std::fmt::Debug, K: ?Sized, V, C: std::fmt::Debug> std::fmt::Debug for Typed<S, K, V, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("store", &self.store)
            .field("codec", &self.codec)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .finish()
    }
}

impl<S: Store, K: Serialize + ?Sized, V: Serialize + DeserializeOwned> Typed<S, K, V, Postcard> {
    /// A postcard view of `store`.
    pub fn new(store: S) -> Self {
        Typed {
            store,
            codec: Postcard,
            types: PhantomData,
        }
    }
}

impl<S: Store, K: Serialize + ?Sized, V: Serialize + DeserializeOwned, C: Codec> Typed<S, K, V, C> {
    /// The same view with another codec (keys and values written from now on use it;
    /// values read are decoded whatever codec wrote them).
    pub fn with_codec<D: Codec>(self, codec: D) -> Typed<S, K, V, D> {
        Typed {
            store: self.store,
            codec,
            types: PhantomData,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The raw key `key` is stored under.
    pub fn key(&self, key: &K) -> Result<Vec<u8>> {
        self.codec.encode_key(key)
    }

    fn decode(&self, bytes: Option<Vec<u8>>) -> Result<Option<V>> {
        bytes.map(|b| self.codec.decode(&b)).transpose()
    }

    /// The live value of `key`; [`Error::Decode`] if the bytes there are not a `V`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.decode(self.store.raw_get(&self.key(key)?)?)
    }

    /// Stores `value` under `key` ([`Cache::set`]); `false` only when a [`FanoutCache`] shard
    /// stayed busy past its fail-soft timeout.
    pub fn set(
        &self,
        key: &K,
        value: &V,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let value = self.codec.encode(value)?;
        self.store.raw_set(&self.key(key)?, &value, expire, tag)
    }

    /// Stores `value` only if `key` is absent ([`Cache::add`]); whether it did.
    pub fn add(
        &self,
        key: &K,
        value: &V,
        expire: Option<Duration>,
        tag: Option<&str>,
    ) -> Result<bool> {
        let value = self.codec.encode(value)?;
        self.store.raw_add(&self.key(key)?, &value, expire, tag)
    }

    /// Removes `key` and returns its value ([`Cache::pop`]).
    pub fn pop(&self, key: &K) -> Result<Option<V>> {
        self.decode(self.store.raw_pop(&self.key(key)?)?)
    }

    /// Removes `key`; whether a live entry was there ([`Cache::delete`]).
    pub fn delete(&self, key: &K) -> Result<bool> {
        self.store.raw_delete(&self.key(key)?)
    }

    /// Whether a live entry is there ([`Cache::contains`]).
    pub fn contains(&self, key: &K) -> Result<bool> {
        self.store.raw_contains(&self.key(key)?)
    }

    /// A new expiry for `key` ([`Cache::touch`]).
    pub fn touch(&self, key: &K, expire: Option<Duration>) -> Result<bool> {
        self.store.raw_touch(&self.key(key)?, expire)
    }

    /// Atomically adds `delta` to the counter at `key` ([`Cache::incr`]). Counters are the
    /// store's decimal integers, not codec values: read them with `incr(key, 0, ..)`, not
    /// [`get`](Typed::get) (which would report [`Error::Decode`]).
    /// `None` only when a [`FanoutCache`] shard stayed busy past its fail-soft timeout.
    pub fn incr(&self, key: &K, delta: i64, default: Option<i64>) -> Result<Option<i64>> {
        self.store.raw_incr(&self.key(key)?, delta, default)
    }

    /// The live value of `key`, or `compute()` stored and returned ([`Cache::memoize`]).
    /// Bytes there that are not a `V` count as a miss and are replaced.
    pub fn memoize(
        &self,
        key: &K,
        expire: Option<Duration>,
        tag: Option<&str>,
        compute: impl FnOnce() -> Result<V>,
    ) -> Result<V> {
        let raw = self.key(key)?;
        match self.store.raw_get(&raw)?.map(|b| self.codec.decode(&b)) {
            Some(Ok(v)) => return Ok(v),
            Some(Err(Error::Decode(_))) | None => {}
            Some(Err(e)) => return Err(e),
        }
        let v = compute()?;
        self.store
            .raw_set(&raw, &self.codec.encode(&v)?, expire, tag)?;
        Ok(v)
    }
}

/// `typed` on a [`Store`] type (the same for [`Cache`] and [`FanoutCache`]).
macro_rules! typed_on {
    ($t:ty) => {
        impl $t {
            /// A [`Typed`] view of this cache: keys `K`, values `V`, postcard-encoded.
            pub fn typed<K: Serialize + ?Sized, V: Serialize + DeserializeOwned>(
                &self,
            ) -> Typed<$t, K, V> {
                Typed::new(self.clone())
            }
        }
    };
}
typed_on!(Cache);
typed_on!(FanoutCache);

impl Index {
    /// A [`Typed`] view of this index's cache (pass `None` for expiry to keep items, as
    /// an index does).
    ///
    /// ```
    /// # fn main() -> hoard_store::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let index = hoard_store::Index::open(dir.path())?;
    /// let names = index.typed::<u64, String>();
    /// names.set(&7, &"seven".to_string(), None, None)?;
    /// assert_eq!(names.get(&7)?.as_deref(), Some("seven"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn typed<K: Serialize + ?Sized, V: Serialize + DeserializeOwned>(
        &self,
    ) -> Typed<Cache, K, V> {
        Typed::new(self.cache().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Shape {
        Circle(f64),
        Rect { w: u32, h: u32 },
    }

    fn round_trip<S: Store>(t: Typed<S, (u8, String), Shape>) {
        let k = &(1u8, "a".to_string());
        assert_eq!(t.get(k).unwrap(), None);
        t.set(k, &Shape::Rect { w: 2, h: 3 }, None, None).unwrap();
        assert_eq!(t.get(k).unwrap(), Some(Shape::Rect { w: 2, h: 3 }));
        assert_eq!(t.pop(k).unwrap(), Some(Shape::Rect { w: 2, h: 3 }));
        assert_eq!(t.get(k).unwrap(), None);
    }

    #[test]
    fn typed_ops_on_cache_fanout_and_index() {
        let dir = tempfile::tempdir().unwrap();
        round_trip(Cache::open(dir.path().join("c")).unwrap().typed());
        round_trip(FanoutCache::open(dir.path().join("f"), 3).unwrap().typed());
        round_trip(Index::open(dir.path().join("i")).unwrap().typed());
    }

    #[test]
    fn wrong_type_is_a_decode_error_and_memoize_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let shapes = cache.typed::<str, Shape>();
        let texts = cache.typed::<str, String>(); // same key bytes, another type
        texts.set("k", &"not a shape".into(), None, None).unwrap();
        assert!(matches!(shapes.get("k"), Err(Error::Decode(_))));
        let got = shapes
            .memoize("k", None, None, || Ok(Shape::Circle(1.5)))
            .unwrap();
        assert_eq!(got, Shape::Circle(1.5));
        assert_eq!(shapes.get("k").unwrap(), Some(Shape::Circle(1.5)));
        // Raw bytes under the typed key: format byte 1, then postcard.
        let raw = cache.get(&shapes.key("k").unwrap()).unwrap().unwrap();
        assert_eq!(raw[0], 1);
    }

    #[test]
    fn typed_add_delete_contains_touch_incr() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let t = cache.typed::<u32, Vec<String>>();
        assert!(t.add(&1, &vec!["a".into()], None, None).unwrap());
        assert!(!t.add(&1, &vec!["b".into()], None, None).unwrap());
        assert!(t.contains(&1).unwrap());
        assert!(t.touch(&1, Some(Duration::from_secs(60))).unwrap());
        assert!(t.delete(&1).unwrap());
        assert!(!t.contains(&1).unwrap());
        assert_eq!(t.incr(&2, 5, Some(10)).unwrap(), Some(15));
        assert_eq!(t.incr(&2, 0, None).unwrap(), Some(15));
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn compressed_values_through_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let t = cache
            .typed::<str, Vec<u64>>()
            .with_codec(crate::codec::Compressed::new(Postcard, 1024));
        let big: Vec<u64> = (0..100_000).map(|i| i % 7).collect();
        t.set("big", &big, None, None).unwrap();
        let raw = cache.get(&t.key("big").unwrap()).unwrap().unwrap();
        assert_eq!(raw[0], 0x81, "postcard, zstd-compressed");
        assert!(raw.len() < 10_000, "{} bytes", raw.len());
        assert_eq!(t.get("big").unwrap(), Some(big.clone()));
        // A plain postcard view reads it too: one decoder.
        assert_eq!(
            cache.typed::<str, Vec<u64>>().get("big").unwrap(),
            Some(big)
        );
    }
}
