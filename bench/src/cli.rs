//! Command-line arguments the load clients share.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::parse_addr;

/// What a load client loads, from which cores, and where its summary goes.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Echo server to load.
    #[arg(long, value_parser = parse_addr)]
    pub target: SocketAddr,
    /// Cores to generate load on: all, a count (2) or a list (1,3).
    #[arg(long, default_value = "all")]
    pub cores: String,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Write the summary as JSON here (the layout of `weft load --json`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}
