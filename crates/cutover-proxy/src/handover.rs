//! Handing the listening sockets from a running edge to a new edge process (an upgrade of the
//! cutover binary), so that no connection is refused: the new edge asks the old one over its
//! admin socket (`handover`), which answers with the addresses and, in the same message, the
//! sockets themselves (SCM_RIGHTS, through rustix). The new edge serves them, takes the admin
//! socket's path, and says `ready`; only then does the old edge stop accepting and drain.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::protocol::{self, Reply, Request};
use crate::ProxyError;

/// The most listening sockets one handover carries.
pub(crate) const MAX_LISTENERS: usize = 250;

/// How long each side waits for the other during a handover.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// What the new edge took over: the old edge's listening sockets, and the connection on which
/// it tells the old one that it serves them.
pub(crate) struct Taken {
    conn: UnixStream,
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl Taken {
    /// Tells the old edge that this one serves: it stops accepting and drains.
    pub fn ready(mut self) {
        let _ = self.conn.write_all(b"ready\n");
        let _ = self.conn.flush();
    }
}

/// Asks the edge on `socket` for its listening sockets (blocking).
pub(crate) fn take(socket: &Path) -> Result<Taken, ProxyError> {
    let failed = |detail: String| ProxyError::StartFailed {
        detail: format!("taking over from the running edge: {detail}"),
    };
    let mut conn = UnixStream::connect(socket).map_err(|source| ProxyError::NotRunning {
        socket: socket.to_path_buf(),
        source,
    })?;
    let io = |e: std::io::Error| failed(e.to_string());
    conn.set_read_timeout(Some(WAIT)).map_err(io)?;
    conn.set_write_timeout(Some(WAIT)).map_err(io)?;
    conn.write_all(&protocol::to_line(&Request::Handover))
        .map_err(io)?;

    let mut buf = vec![0u8; 64 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut line = buf[..received.bytes].to_vec();
    while !line.ends_with(b"\n") {
        let mut more = [0u8; 4096];
        let n = conn.read(&mut more).map_err(io)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&more[..n]);
    }
    let line = String::from_utf8_lossy(&line);
    let addrs = match protocol::parse_reply(&line) {
        Ok(Reply::Handover { listeners }) => listeners,
        Ok(Reply::Error(error)) => return Err(ProxyError::Refused { error }),
        Ok(other) => return Err(failed(format!("`handover` was answered with {other:?}"))),
        Err(detail) => return Err(ProxyError::BadReply { detail }),
    };
    if addrs.len() != fds.len() {
        return Err(failed(format!(
            "{} addresses came with {} sockets",
            addrs.len(),
            fds.len()
        )));
    }
    let listeners = addrs
        .into_iter()
        .zip(fds)
        .map(|(addr, fd)| (addr, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Taken { conn, listeners })
}

/// Sends the reply to a `handover` with the listening sockets, in one message, on `conn` (a
/// blocking socket of the old edge).
pub(crate) fn give(
    conn: &UnixStream,
    listeners: &[(SocketAddr, BorrowedFd<'_>)],
) -> std::io::Result<()> {
    if listeners.len() > MAX_LISTENERS {
        return Err(std::io::Error::other(format!(
            "{} listening sockets, at most {MAX_LISTENERS} go in one handover",
            listeners.len()
        )));
    }
    let reply = Reply::Handover {
        listeners: listeners.iter().map(|(addr, _)| *addr).collect(),
    };
    let line = protocol::to_line(&reply);
    let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other(
            "the sockets do not fit in one message",
        ));
    }
    let sent = sendmsg(
        conn,
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    // The rest of a long line, if the socket took only part of it (the sockets went with its
    // first bytes).
    let mut writer = conn;
    writer.write_all(&line[sent..])
}
