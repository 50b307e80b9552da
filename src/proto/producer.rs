//! Producers (Twisted's `IPushProducer`) and the slot a transport keeps one in: which call the
//! producer is owed, delivered outside any borrow, and the calls it misses while one of its
//! own callbacks runs delivered when that callback returns.

/// A source of data that a consumer can slow down: Twisted's `IPushProducer`.
///
/// Register one on the transport it writes into with
/// [`Transport::register_producer`](crate::Transport::register_producer): when that
/// transport's queued output passes the high-water mark the producer is paused, and it resumes
/// at the low-water mark. A [`Transport`](crate::Transport) is itself a producer (pausing it
/// pauses its reading), which is how a relay propagates back-pressure from a slow reader to a
/// fast writer.
pub trait Producer {
    /// Stop producing until [`resume_producing`](Self::resume_producing).
    fn pause_producing(&mut self);
    /// Produce again.
    fn resume_producing(&mut self);
    /// The consumer is gone: stop for good.
    fn stop_producing(&mut self) {}
}

/// A call a producer is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Pause,
    Resume,
    Stop,
}

impl Call {
    /// Makes the call.
    pub(crate) fn on(self, producer: &mut dyn Producer) {
        match self {
            Call::Pause => producer.pause_producing(),
            Call::Resume => producer.resume_producing(),
            Call::Stop => producer.stop_producing(),
        }
    }
}

/// What became of a producer while one of its callbacks ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Nothing: it goes back in the slot.
    Kept,
    /// Unregistered: dropped when the callback returns.
    Unregistered,
    /// Replaced by another: stopped when the callback returns.
    Replaced,
}

/// Where a transport keeps its producer. The producer leaves the slot while it is called, so
/// that it may use the transport (write to it, unregister itself) from inside its callback;
/// what happens meanwhile is settled when it comes back.
#[derive(Default)]
pub(crate) struct ProducerSlot {
    producer: Option<Box<dyn Producer>>,
    /// Out of the slot, in a callback, and what became of it meanwhile.
    busy: Option<Fate>,
    /// Its last pause or resume was a pause.
    paused: bool,
}

impl ProducerSlot {
    /// True while a producer is registered (in the slot or in a callback).
    pub(crate) fn is_registered(&self) -> bool {
        self.producer.is_some() || self.busy == Some(Fate::Kept)
    }

    /// Registers `producer`, which starts unpaused; returns the one it replaces, to be
    /// stopped (a replaced producer that is in a callback is stopped when it returns).
    pub(crate) fn register(&mut self, producer: Box<dyn Producer>) -> Option<Box<dyn Producer>> {
        if self.busy == Some(Fate::Kept) {
            self.busy = Some(Fate::Replaced);
        }
        self.paused = false;
        self.producer.replace(producer)
    }

    /// Unregisters the producer and hands it back; one in a callback is dropped when it
    /// returns instead.
    pub(crate) fn unregister(&mut self) -> Option<Box<dyn Producer>> {
        if self.busy == Some(Fate::Kept) {
            self.busy = Some(Fate::Unregistered);
        }
        self.producer.take()
    }

    /// Takes the producer out for the call it is owed, given whether the output is paused
    /// and whether the connection is gone: `None` when it is owed nothing, when none is
    /// registered, or while it is in a callback (the call is made when it returns).
    pub(crate) fn take_owed(
        &mut self,
        flow_paused: bool,
        disconnected: bool,
    ) -> Option<(Box<dyn Producer>, Call)> {
        if self.busy.is_some() {
            return None;
        }
        let call = if disconnected {
            Call::Stop
        } else if flow_paused != self.paused {
            if flow_paused { Call::Pause } else { Call::Resume }
        } else {
            return None;
        };
        let producer = self.producer.take()?;
        match call {
            Call::Stop => {}
            _ => {
                self.paused = call == Call::Pause;
                self.busy = Some(Fate::Kept);
            }
        }
        Some((producer, call))
    }

    /// A producer taken for a pause or resume is back from its call: it returns to the slot,
    /// unless it was unregistered (dropped) or replaced (handed back, to be stopped).
    pub(crate) fn put_back(&mut self, producer: Box<dyn Producer>) -> Option<Box<dyn Producer>> {
        match self.busy.take() {
            Some(Fate::Replaced) => Some(producer),
            Some(Fate::Unregistered) => None,
            Some(Fate::Kept) | None => {
                self.producer = Some(producer);
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Records the calls a producer gets.
    pub(crate) struct Probe(pub(crate) Rc<RefCell<Vec<&'static str>>>);

    impl Producer for Probe {
        fn pause_producing(&mut self) {
            self.0.borrow_mut().push("pause");
        }
        fn resume_producing(&mut self) {
            self.0.borrow_mut().push("resume");
        }
        fn stop_producing(&mut self) {
            self.0.borrow_mut().push("stop");
        }
    }

    fn probe() -> (Box<dyn Producer>, Rc<RefCell<Vec<&'static str>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        (Box::new(Probe(log.clone())), log)
    }

    #[test]
    fn a_producer_is_owed_what_the_output_says() {
        let (p, _) = probe();
        let mut slot = ProducerSlot::default();
        assert!(slot.register(p).is_none());
        assert!(slot.take_owed(false, false).is_none(), "running, as it should be");
        let (p, call) = slot.take_owed(true, false).unwrap();
        assert_eq!(call, Call::Pause);
        assert!(slot.is_registered(), "registered while in its callback");
        assert!(slot.take_owed(false, false).is_none(), "nothing while it is out");
        assert!(slot.put_back(p).is_none());
        let (p, call) = slot.take_owed(false, false).unwrap();
        assert_eq!(call, Call::Resume, "the resume it missed meanwhile");
        slot.put_back(p);
        let (_, call) = slot.take_owed(false, true).unwrap();
        assert_eq!(call, Call::Stop);
        assert!(!slot.is_registered());
    }

    #[test]
    fn unregistered_or_replaced_in_its_callback_it_does_not_come_back() {
        let mut slot = ProducerSlot::default();
        let (a, _) = probe();
        slot.register(a);
        let (a, _) = slot.take_owed(true, false).unwrap();
        assert!(slot.unregister().is_none(), "it is in its callback");
        assert!(!slot.is_registered());
        assert!(slot.put_back(a).is_none());
        assert!(!slot.is_registered(), "dropped, not put back");

        let (b, _) = probe();
        slot.register(b);
        let (b, _) = slot.take_owed(true, false).unwrap();
        let (c, _) = probe();
        assert!(slot.register(c).is_none());
        assert!(
            slot.put_back(b).is_some(),
            "the replaced one is handed back to be stopped"
        );
        assert!(slot.is_registered());
        let (_, call) = slot.take_owed(true, false).unwrap();
        assert_eq!(call, Call::Pause, "the new one starts unpaused");
    }
}
