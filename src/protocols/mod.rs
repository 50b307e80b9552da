//! Reference protocols, used by the CLI, the tests and the benchmarks.

mod discard;
mod echo;
pub mod http;
pub mod kv;
pub mod kv_metrics;
mod relay;
mod whoami;

pub use discard::Discard;
pub use echo::Echo;
pub use http::Http;
pub use kv::{Kv, KvConfig, KvFactory, KvShard};
pub use relay::Relay;
pub use whoami::Whoami;
