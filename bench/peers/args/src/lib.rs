//! The command line weft's benchmark peers share: where a peer listens and on which cores it
//! runs one server thread each. Nothing here touches a runtime, so that each peer stays the
//! program a user of its runtime would write.

use std::net::SocketAddr;

/// An echo peer's command line: the server's arguments and its read buffer.
#[derive(Debug, Clone, clap::Parser)]
pub struct EchoArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub buf: usize,
}

/// Where a peer server listens and on which cores it runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on (127.0.0.1:7000, [::1]:7000).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Cores: all, a count (2: the first two this process may run on) or a list (0,2-3; one
    /// core: 1,); one server thread per core.
    #[arg(long, default_value = "all")]
    pub cores: String,
}

impl ServerArgs {
    /// The cores to run on, resolved against those this process may run on (`taskset`).
    ///
    /// # Errors
    ///
    /// A malformed selection, or a core outside the allowed set, as a line for the user.
    pub fn cores(&self) -> Result<Vec<usize>, String> {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        resolve(&self.cores, &allowed)
    }
}

/// Resolves a core selection (`all`, a count, a list with ranges) against `allowed`.
fn resolve(spec: &str, allowed: &[usize]) -> Result<Vec<usize>, String> {
    let spec = spec.trim();
    if spec == "all" {
        return Ok(allowed.to_vec());
    }
    let bad = |what: &str| format!("--cores {spec}: {what} (all, a count, or a list like 0,2-3)");
    if !spec.contains([',', '-']) {
        let n: usize = spec.parse().map_err(|_| bad("not a number"))?;
        if n == 0 || n > allowed.len() {
            return Err(bad(&format!("this process may run on {} cores", allowed.len())));
        }
        return Ok(allowed[..n].to_vec());
    }
    let mut cores = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = match (first.parse(), last.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(bad(&format!("bad item {part:?}"))),
        };
        for core in first..=last {
            if !allowed.contains(&core) {
                return Err(bad(&format!("core {core} is not among the allowed {allowed:?}")));
            }
            if !cores.contains(&core) {
                cores.push(core);
            }
        }
    }
    if cores.is_empty() {
        return Err(bad("no core"));
    }
    Ok(cores)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (no privilege needed), for servers that
/// accept thousands of connections.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn selections() {
        let allowed = [0, 1, 2, 3];
        assert_eq!(resolve("all", &allowed), Ok(vec![0, 1, 2, 3]));
        assert_eq!(resolve("2", &allowed), Ok(vec![0, 1]));
        assert_eq!(resolve("1,", &allowed), Ok(vec![1]));
        assert_eq!(resolve("0,2-3,2", &allowed), Ok(vec![0, 2, 3]));
        for bad in ["0", "5", "x", "3-1", "4,", ",", "1-x"] {
            assert!(resolve(bad, &allowed).is_err(), "{bad}");
        }
    }
}
