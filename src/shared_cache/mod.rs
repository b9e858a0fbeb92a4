//! The shared token cache: replicas that share a Redis share one token per token key, fetched
//! by one of them under a lock, stored encrypted, and every replica falls back to fetching its own
//! tokens whenever Redis fails.
//!
//! - [`key`]: the Redis key names, hashed from what makes a token different.
//! - [`seal`]: AES-256-GCM sealing of the stored values under the key file's keyring.
//! - [`client`]: the Redis operations, each bounded by the timeout and counted in the metrics.
//! - [`plan`]: pure rules for the shared refresh time, the fallback and what replaces a token.
//! - [`refresher`]: the per-token refresher that uses all of the above.

pub mod client;
pub mod key;
pub mod plan;
pub mod refresher;
pub mod seal;

pub use client::SharedCache;
