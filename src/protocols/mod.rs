//! Reference protocols, used by the CLI, the tests and the benchmarks.

mod discard;
mod echo;
pub mod http;
mod relay;
mod whoami;

pub use discard::Discard;
pub use echo::Echo;
pub use http::Http;
pub use relay::Relay;
pub use whoami::Whoami;
