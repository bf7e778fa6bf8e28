//! The edge's listening sockets: one per address some route names, opened when a route first
//! names it and closed when none does any more. The edge keeps each socket here and hands
//! every serving thread a duplicate to accept from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc::UnboundedSender;

use crate::protocol::ListenerStatus;
use crate::Command;

/// How many connections may wait to be accepted (as nginx's `listen … backlog`).
const BACKLOG: u32 = 1024;

pub(crate) struct Listeners {
    threads: Vec<UnboundedSender<Command>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: BTreeMap<SocketAddr, Open>,
    /// Addresses a route names that could not be listened on at start-up, and why.
    failed: BTreeMap<SocketAddr, String>,
}

struct Open {
    /// The edge's own descriptor (the serving threads hold duplicates); closing the last one
    /// closes the socket.
    socket: std::net::TcpListener,
    bound: SocketAddr,
}

/// Binds `listen` for accepting (non-blocking, address reuse, a deep backlog).
pub(crate) fn bind(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(listen),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

impl Listeners {
    pub fn new(threads: Vec<UnboundedSender<Command>>) -> Listeners {
        Listeners {
            threads,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `listen` is open.
    pub fn is_open(&self, listen: SocketAddr) -> bool {
        self.state().open.contains_key(&listen)
    }

    /// Opens `listen` (if it is not open) and has every serving thread accept on it.
    pub fn open(&self, listen: SocketAddr) -> std::io::Result<()> {
        if self.is_open(listen) {
            return Ok(());
        }
        let socket = bind(listen)?;
        self.adopt(listen, socket)
    }

    /// Serves `socket`, already bound and listening, as `listen`.
    pub fn adopt(&self, listen: SocketAddr, socket: std::net::TcpListener) -> std::io::Result<()> {
        socket.set_nonblocking(true)?;
        let bound = socket.local_addr()?;
        for thread in &self.threads {
            let _ = thread.send(Command::Open(listen, socket.try_clone()?));
        }
        let mut state = self.state();
        state.failed.remove(&listen);
        state.open.insert(listen, Open { socket, bound });
        Ok(())
    }

    /// Listens on exactly `wanted`: closes the others, opens those not open (an address that
    /// cannot be listened on is recorded, shown by `status`, and the rest go on).
    pub fn sync(&self, wanted: &BTreeSet<SocketAddr>) {
        self.close_unused(wanted);
        for &listen in wanted {
            if let Err(e) = self.open(listen) {
                eprintln!("edge: cannot listen on {listen}: {e}");
                self.state().failed.insert(listen, e.to_string());
            }
        }
    }

    /// Closes the listeners of addresses not in `wanted`.
    pub fn close_unused(&self, wanted: &BTreeSet<SocketAddr>) {
        let unwanted: Vec<SocketAddr> = {
            let mut state = self.state();
            state.failed.retain(|addr, _| wanted.contains(addr));
            state
                .open
                .keys()
                .filter(|a| !wanted.contains(a))
                .copied()
                .collect()
        };
        for listen in unwanted {
            self.close(listen);
        }
    }

    /// Stops accepting on `listen` and closes the socket.
    pub fn close(&self, listen: SocketAddr) {
        for thread in &self.threads {
            let _ = thread.send(Command::Close(listen));
        }
        self.state().open.remove(&listen);
    }

    /// A duplicate of every listening socket, with its address (for a handover).
    pub fn duplicates(&self) -> Vec<(SocketAddr, std::os::fd::OwnedFd)> {
        self.state()
            .open
            .iter()
            .filter_map(|(listen, open)| {
                let fd = open.socket.try_clone().ok()?;
                Some((*listen, std::os::fd::OwnedFd::from(fd)))
            })
            .collect()
    }

    /// Closes every listener (the edge is stopping): a new edge may listen on them at once.
    pub fn close_all(&self) {
        self.close_unused(&BTreeSet::new());
    }

    pub fn status(&self) -> Vec<ListenerStatus> {
        let state = self.state();
        let open = state.open.iter().map(|(listen, open)| ListenerStatus {
            listen: *listen,
            bound: Some(open.bound),
            error: None,
        });
        let failed = state.failed.iter().map(|(listen, why)| ListenerStatus {
            listen: *listen,
            bound: None,
            error: Some(why.clone()),
        });
        open.chain(failed).collect()
    }
}
