//! The checks every implementation of a store port passes, run from each implementation's tests
//! against an empty store: [`trends`] for the trend stores (`TrendStore`), [`recommend`] for the
//! recommendation stores (`RecommendStore`), [`outbox`] for the outboxes (`Outbox`). They panic on
//! the first difference from the domain's rules.

pub mod outbox;
pub mod recommend;
pub mod trends;
