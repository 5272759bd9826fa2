//! Redis adapters. [`RedisTrends`] keeps the trends in sorted sets and hashes under a key prefix,
//! updated by one Lua script per batch, which also moves the consumed positions: a batch is
//! applied, positions included, entirely or not at all.

mod trends;

pub use trends::{RedisTrends, connect};
