//! Upgraded connections (WebSocket, and any HTTP/1.1 `Upgrade`): bytes flow both ways until
//! either side closes, or until the edge closes the tunnel because its upstream was drained
//! past the drain timeout or the edge is stopping. A WebSocket is then closed the way RFC 6455
//! says: at a frame boundary, with a Close frame (1001, going away) the client can answer.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::routes::InflightGuard;

/// How long a closing tunnel waits for the upstream to finish the frame it is sending.
const FINISH_FRAME: Duration = Duration::from_secs(2);
/// How long a closed WebSocket waits for the client's answering Close frame.
const CLOSE_ANSWER: Duration = Duration::from_secs(1);

/// A Close frame from the edge (unmasked, as a server's): status 1001 "going away".
const GOING_AWAY: [u8; 14] = [
    0x88, 12, 0x03, 0xE9, b'g', b'o', b'i', b'n', b'g', b' ', b'a', b'w', b'a', b'y',
];

/// Relays an upgraded connection. `guard` counts it in flight to its upstream (a drain waits
/// for it, and past its timeout closes it); `_alive` keeps the edge's shutdown waiting for it.
pub(crate) async fn relay<C, U>(
    client: C,
    upstream: U,
    websocket: bool,
    guard: InflightGuard,
    mut shutdown: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut from_upstream = Frames::default();
    let mut buf = vec![0u8; 16 * 1024];
    let _tunnel = guard.tunnel();
    let close = guard.closing();
    tokio::pin!(close);
    let closing = {
        let to_upstream = async {
            let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
            let _ = upstream_write.shutdown().await;
            copied
        };
        tokio::pin!(to_upstream);
        let (mut client_done, mut upstream_done) = (false, false);
        let mut finish_by: Option<tokio::time::Instant> = None;
        loop {
            if client_done && upstream_done {
                break false;
            }
            tokio::select! {
                copied = &mut to_upstream, if !client_done => {
                    client_done = true;
                    if copied.is_err() {
                        break false;
                    }
                }
                read = upstream_read.read(&mut buf), if !upstream_done => match read {
                    Ok(0) | Err(_) => {
                        upstream_done = true;
                        let _ = client_write.shutdown().await;
                    }
                    Ok(n) => {
                        if websocket {
                            from_upstream.advance(&buf[..n]);
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break false;
                        }
                        if finish_by.is_some() && from_upstream.at_boundary() {
                            break true;
                        }
                    }
                },
                () = &mut close, if finish_by.is_none() => {
                    if !websocket || from_upstream.at_boundary() {
                        break true;
                    }
                    finish_by = Some(tokio::time::Instant::now() + FINISH_FRAME);
                }
                () = crate::stopping(&mut shutdown), if finish_by.is_none() => {
                    if !websocket || from_upstream.at_boundary() {
                        break true;
                    }
                    finish_by = Some(tokio::time::Instant::now() + FINISH_FRAME);
                }
                () = sleep_until(finish_by) => break true,
            }
        }
    };
    if closing && websocket && from_upstream.at_boundary() {
        // The client answers a Close with a Close; then the connection ends.
        if client_write.write_all(&GOING_AWAY).await.is_ok() && client_write.flush().await.is_ok() {
            let mut from_client = Frames::default();
            let _ = tokio::time::timeout(CLOSE_ANSWER, async {
                while !from_client.saw_close {
                    match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => from_client.advance(&buf[..n]),
                    }
                }
            })
            .await;
        }
    }
    let _ = client_write.shutdown().await;
    // `guard` goes now: the tunnel no longer counts in flight.
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a WebSocket byte stream is between frames (RFC 6455 §5.2), so that the edge can end
/// it between two frames and not in the middle of one.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    header: [u8; 14],
    /// Bytes of the current frame's header seen so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A Close frame has begun.
    pub saw_close: bool,
}

impl Frames {
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    pub fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = &bytes[n..];
                self.payload_left -= n as u64;
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 {
                continue;
            }
            let short = self.header[1] & 0x7f;
            let extended = match short {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
            if self.have < 2 + extended + mask {
                continue;
            }
            self.payload_left = match short {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
                n => u64::from(n),
            };
            if self.header[0] & 0x0f == 0x8 {
                self.saw_close = true;
            }
            self.have = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_found_byte_by_byte_and_in_bulk() {
        // A 5-byte text frame, a 300-byte binary frame (16-bit length), a masked 2-byte close.
        let mut stream = vec![0x81, 5];
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&[0x82, 126, 0x01, 0x2C]);
        stream.extend_from_slice(&[7u8; 300]);
        let close_at = stream.len();
        stream.extend_from_slice(&[0x88, 0x82, 1, 2, 3, 4, 0, 0]);
        let boundaries = [0, 7, 311, stream.len()];

        let mut frames = Frames::default();
        for (i, byte) in stream.iter().enumerate() {
            assert_eq!(frames.at_boundary(), boundaries.contains(&i), "at {i}");
            assert_eq!(frames.saw_close, i > close_at + 5, "at {i}");
            frames.advance(std::slice::from_ref(byte));
        }
        assert!(frames.at_boundary() && frames.saw_close);

        let mut bulk = Frames::default();
        bulk.advance(&stream[..9]);
        assert!(!bulk.at_boundary());
        bulk.advance(&stream[9..311]);
        assert!(bulk.at_boundary() && !bulk.saw_close);
        bulk.advance(&stream[311..]);
        assert!(bulk.at_boundary() && bulk.saw_close);

        let mut long = Frames::default();
        long.advance(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(long.payload_left, 65536);
    }
}
