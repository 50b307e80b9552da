//! A line-based chat whose rooms span every shard: each shard keeps its own members, and a
//! message reaches the members on all shards through `invoke_on_all`. No locks, no glommio,
//! no signal handling of its own: `Service` gives it the lifecycle.
//!
//! ```sh
//! cargo run --release --example chat -- 127.0.0.1:7100
//! nc 127.0.0.1 7100      # then: /nick ann, /join lobby, hello
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use weft::codec::{FrameHandler, Framed, LineDecoder};
use weft::{CloseReason, EngineConfig, Service, Transport, factory_fn, shard};

/// One shard's members, by room: the connections of this shard only.
#[derive(Default)]
struct Rooms {
    members: RefCell<HashMap<String, Vec<(u64, Transport)>>>,
    next_id: Cell<u64>,
}

impl Rooms {
    /// Writes `line` to the room's members here; one whose output is full (it does not
    /// read) misses it, rather than the shard's memory growing for it.
    fn deliver(&self, room: &str, line: &[u8]) {
        for (_, t) in self.members.borrow().get(room).into_iter().flatten() {
            if !t.is_output_full() {
                t.write(line);
            }
        }
    }

    fn leave(&self, room: &str, id: u64) {
        let mut members = self.members.borrow_mut();
        if let Some(list) = members.get_mut(room) {
            list.retain(|(m, _)| *m != id);
            if list.is_empty() {
                members.remove(room);
            }
        }
    }
}

/// One chatter.
struct Chatter {
    id: u64,
    nick: String,
    room: Option<String>,
    rooms: Rc<Rooms>,
    /// Lines on their way to the other shards.
    sending: Rc<Cell<usize>>,
}

impl Chatter {
    /// Sends `text` to everyone in the chatter's room, on every shard. While lines are on
    /// their way the chatter's reading pauses: one who floods waits for the others.
    fn say(&self, text: String, t: &Transport) {
        let Some(room) = self.room.clone() else { return };
        let line = format!("{}: {text}\n", self.nick).into_bytes();
        let (t, sending) = (t.clone(), self.sending.clone());
        sending.set(sending.get() + 1);
        t.pause_reading();
        shard::spawn(async move {
            let _ = shard::invoke_on_all(move |r: &Rooms| r.deliver(&room, &line)).await;
            sending.set(sending.get() - 1);
            if sending.get() == 0 {
                t.resume_reading();
            }
        });
    }
}

impl FrameHandler for Chatter {
    type Decoder = LineDecoder;

    fn connection_made(&mut self, t: &Transport) {
        t.write(b"welcome: /nick NAME, /join ROOM, then talk\n");
    }

    fn frame_received(&mut self, line: Vec<u8>, t: &Transport) {
        let line = String::from_utf8_lossy(&line).trim().to_owned();
        if let Some(nick) = line.strip_prefix("/nick ") {
            self.nick = nick.trim().to_owned();
        } else if let Some(room) = line.strip_prefix("/join ") {
            if let Some(old) = self.room.take() {
                self.rooms.leave(&old, self.id);
            }
            let room = room.trim().to_owned();
            // Other shards write to a member: at shutdown it is told last, once the lines
            // on their way have reached it.
            t.follow_drain();
            let mut members = self.rooms.members.borrow_mut();
            members
                .entry(room.clone())
                .or_default()
                .push((self.id, t.clone()));
            drop(members);
            self.room = Some(room);
            self.say("joined".into(), t);
        } else if !line.is_empty() {
            self.say(line, t);
        }
    }

    fn drain_requested(&mut self, t: &Transport) {
        // Chatters are never done: tell them, and close once that is sent.
        t.write(b"server shutting down\n");
        t.lose_connection();
    }

    fn connection_lost(&mut self, _reason: &CloseReason) {
        if let Some(room) = self.room.take() {
            self.rooms.leave(&room, self.id);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weft::logging::init();
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:7100")
        .parse()?;
    Service::new(EngineConfig::default())
        .name("chat")
        .shard_state(|_| Rooms::default())
        .listen(listen, |_| {
            // The rooms `shard_state` made on this shard (none would turn every chatter away).
            let rooms = shard::state::<Rooms>();
            factory_fn(move |_peer| {
                let rooms = rooms.clone()?;
                let id = rooms.next_id.get();
                rooms.next_id.set(id + 1);
                let nick = format!("guest{}-{id}", shard::current().map_or(0, |s| s.index));
                let chatter = Chatter {
                    id,
                    nick,
                    room: None,
                    rooms,
                    sending: Rc::default(),
                };
                Some(Framed::new(LineDecoder::new(4096), chatter))
            })
        })
        .run()?;
    Ok(())
}
