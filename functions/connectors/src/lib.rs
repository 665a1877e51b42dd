//! Imports and exports that cross the network. Everything here that reaches a host a
//! user chose goes through [`guard`], the outbound-address guard.

pub mod buckets;
pub mod capture;
pub mod guard;
pub mod http_import;
pub mod proxy;
pub mod sftp;
pub mod sigv4;
pub mod transfer;
pub mod webhook;

pub use guard::Guard;
