//! Core placement: which cores a load client runs on, and one pinned tokio current-thread
//! runtime per core.

use std::future::Future;
use std::io;
use std::thread;

/// Resolves a core selection in weft's syntax (`all`, a count `2`, a list `0,2-3`, one core
/// `1,`) against the cores this process may run on, e.g. as restricted by `taskset`.
///
/// # Errors
///
/// A malformed selection, or cores the process may not run on.
pub fn resolve_cores(spec: &str) -> Result<Vec<usize>, String> {
    let cores: weft::Cores = spec
        .parse()
        .map_err(|e: weft::config::ParseError| e.to_string())?;
    cores.resolve(&weft::Cores::allowed()).map_err(|e| e.to_string())
}

/// Pins the calling thread to `core`; false when the OS refused.
pub fn pin_current(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// Runs `make(index, core)`'s future on one pinned thread per core, each with its own tokio
/// current-thread runtime, and returns their outputs in core order.
///
/// # Errors
///
/// A runtime that could not be built, or a thread that panicked.
pub fn per_core<F, Fut, T>(cores: &[usize], make: F) -> io::Result<Vec<T>>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let threads: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(index, &core)| {
            let make = make.clone();
            thread::Builder::new()
                .name(format!("core-{core}"))
                .spawn(move || -> io::Result<T> {
                    pin_current(core);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    Ok(rt.block_on(make(index, core)))
                })
        })
        .collect::<io::Result<_>>()?;
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| io::Error::other("a per-core thread panicked"))?
        })
        .collect()
}
