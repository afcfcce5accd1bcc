//! A blocking connection to one replica that speaks raw frames, for tools (`vsr stats`,
//! tests): it opens with the hello and, with a cluster key, completes the handshake before
//! returning, so the caller may send any client frame at once.

use super::ClientError;
use crate::auth::{self, ClusterKey};
use crate::wire::{self, Frame, Hello, Peer, Terms};
use bytes::BytesMut;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest frame a tool reads (a stats reply is a few KiB).
const FRAME_BYTES_MAX: u32 = 1 << 20;

/// An open connection to one replica.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    buffer: BytesMut,
    cluster: u128,
    deadline: Instant,
}

impl RawConnection {
    /// Connects to `address` as client `client` of cluster `terms.cluster`, and with
    /// `key` proves it; everything must happen within `timeout` (which also bounds later
    /// reads). A refusal is [`ClientError::Refused`] with the replica's reason.
    pub fn connect(
        address: SocketAddr,
        client: u64,
        terms: Terms,
        key: Option<&ClusterKey>,
        timeout: Duration,
    ) -> Result<RawConnection, ClientError> {
        let deadline = Instant::now() + timeout;
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_nodelay(true)?;
        let cluster = terms.cluster;
        let nonce = match key {
            Some(_) => Some(auth::fresh_nonce().map_err(std::io::Error::other)?),
            None => None,
        };
        let hello = Hello {
            peer: Peer::Client(client),
            terms,
            nonce,
        };
        let mut connection = RawConnection {
            stream,
            buffer: BytesMut::new(),
            cluster,
            deadline,
        };
        let mut out = BytesMut::new();
        wire::encode_hello(&hello, &mut out);
        connection.send(&out)?;
        if key.is_some() {
            let welcome = match connection.read_frame()? {
                Frame::Welcome(welcome) => welcome,
                other => {
                    return Err(ClientError::Protocol(format!(
                        "{address} answered the hello with {}",
                        other.name()
                    )))
                }
            };
            let me = Peer::Client(client);
            let proof = auth::answer_welcome(key, cluster, me, welcome.replica, nonce, &welcome)
                .map_err(|refusal| ClientError::Refused(refusal.reason))?;
            if let Some(proof) = proof {
                let mut out = BytesMut::new();
                wire::encode_proof(&proof, cluster, &mut out);
                connection.send(&out)?;
            }
        }
        Ok(connection)
    }

    /// Writes encoded frames.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame other than a welcome (a keyless replica welcomes without being
    /// asked to wait). A refusal is an error, with its reason.
    pub fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            match wire::decode(&mut self.buffer, self.cluster, FRAME_BYTES_MAX) {
                Ok(Some(Frame::Refusal(refusal))) => {
                    return Err(ClientError::Refused(refusal.reason))
                }
                Ok(Some(Frame::Welcome(welcome))) if welcome.keyed.is_none() => continue,
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => return Err(ClientError::Protocol(error.to_string())),
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            let read = match self.stream.read(&mut chunk) {
                Ok(read) => read,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Timeout)
                }
                Err(error) => return Err(error.into()),
            };
            if read == 0 {
                return Err(ClientError::Protocol(
                    "the replica closed the connection".to_string(),
                ));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}
