//! The real reserved descriptor (Twisted's `_FileDescriptorReservation`).

use std::fs::File;
use std::io;

use crate::proto::accept::Reservation;

/// Holds `/dev/null` open as an emergency slot in the descriptor table.
#[derive(Debug, Default)]
pub struct FdReservation {
    file: Option<File>,
}

impl FdReservation {
    /// Opens the reservation. If the table is already full it starts empty and is re-taken at
    /// the next chance.
    pub fn new() -> Self {
        let mut r = Self::default();
        let _ = r.reserve();
        r
    }
}

impl Reservation for FdReservation {
    fn available(&self) -> bool {
        self.file.is_some()
    }

    fn release(&mut self) {
        self.file = None;
    }

    fn reserve(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            // std opens with O_CLOEXEC.
            self.file = Some(File::open("/dev/null")?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_release_cycle() {
        let mut r = FdReservation::new();
        assert!(r.available());
        r.reserve().unwrap();
        assert!(r.available(), "reserve is idempotent");
        r.release();
        assert!(!r.available());
        r.release();
        r.reserve().unwrap();
        assert!(r.available());
    }
}
