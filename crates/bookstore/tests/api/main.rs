//! HTTP-level tests of the web service. Every test in `backend_tests!` runs twice: on SQLite and on
//! MariaDB (from `dev/services`; a MariaDB that cannot be reached fails the test, it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod books_api;
mod cli;
mod forget;
mod helpers;
mod page;
mod search;
