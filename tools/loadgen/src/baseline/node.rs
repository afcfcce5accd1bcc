//! One baseline process. The primary is a single mio event loop, the shape of a vsr
//! replica's runtime: poll; read every ready socket until it would block; forward each
//! request to every backup buffer and reply to every request that `acks` backups have
//! acknowledged; then flush each connection once. A backup reads forwarded requests and
//! answers each read batch with one cumulative acknowledgement.
//!
//! Back-pressure as in vsr: past `PENDING_MAX` unacknowledged requests or
//! `BACKUP_BUFFER_BYTES_MAX` unsent bytes to a backup, the primary stops reading clients
//! and TCP flow control pushes back on them.

use super::frame;
use anyhow::Context;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Requests forwarded but not yet acknowledged by enough backups.
const PENDING_MAX: usize = 1 << 20;
/// Unsent bytes buffered towards one backup before client reads pause.
const BACKUP_BUFFER_BYTES_MAX: usize = 64 << 20;
/// Bytes read from a socket per read call.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// How long the primary tries to reach its backups at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Which process this is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes client requests, forwards them, replies after the acknowledgements.
    Primary,
    /// Acknowledges what the primary forwards.
    Backup,
}

/// Arguments of `vsr-load baseline-node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// Primary or backup.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Primary: the backups' addresses.
    #[arg(long, value_delimiter = ',')]
    pub backups: Vec<SocketAddr>,
    /// Primary: backup acknowledgements needed before replying (f of a 2f+1 cluster).
    #[arg(long, default_value_t = 1)]
    pub acks: usize,
}

/// Runs a baseline node until killed.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    match args.role {
        Role::Backup => run_backup(args.listen),
        Role::Primary => {
            anyhow::ensure!(
                args.acks <= args.backups.len(),
                "--acks {} > {} backups",
                args.acks,
                args.backups.len()
            );
            Primary::start(&args)?.run()
        }
    }
}

fn run_backup(listen: SocketAddr) -> anyhow::Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(error) = serve_primary(stream) {
                eprintln!("backup: connection ended: {error}");
            }
        });
    }
    Ok(())
}

fn serve_primary(mut stream: std::net::TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut pos = 0;
        let mut last_seq = None;
        while let Some(body) =
            frame::next_frame(&buf[..filled], &mut pos, 8).map_err(anyhow::Error::msg)?
        {
            last_seq = Some(frame::u64_at(body));
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        if let Some(seq) = last_seq {
            stream.write_all(&seq.to_le_bytes())?;
        }
    }
}

/// One socket with its buffers.
struct Connection {
    stream: TcpStream,
    read: Vec<u8>,
    write: Vec<u8>,
    written: usize,
    /// Readiness was reported and the socket has not yet returned WouldBlock.
    readable: bool,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            read: Vec::new(),
            write: Vec::new(),
            written: 0,
            readable: true,
        }
    }

    /// Reads one chunk. `Ok(false)`: would block (readable cleared) or nothing more.
    fn read_chunk(&mut self) -> std::io::Result<bool> {
        let filled = self.read.len();
        self.read.resize(filled + READ_CHUNK_BYTES, 0);
        match self.stream.read(&mut self.read[filled..]) {
            Ok(0) => {
                self.read.truncate(filled);
                Err(ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.read.truncate(filled + n);
                Ok(true)
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                self.read.truncate(filled);
                self.readable = false;
                Ok(false)
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {
                self.read.truncate(filled);
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }

    /// Writes what it can of the write buffer.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.written < self.write.len() {
            match self.stream.write(&self.write[self.written..]) {
                Ok(n) => self.written += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.write.clear();
        self.written = 0;
        Ok(())
    }

    fn unsent_bytes(&self) -> usize {
        self.write.len() - self.written
    }
}

const LISTENER: Token = Token(0);
const BACKUP_TOKEN_BASE: usize = 1;
const CLIENT_TOKEN_BASE: usize = 1 << 16;

struct Primary {
    poll: Poll,
    listener: TcpListener,
    backups: Vec<Connection>,
    /// Highest seq each backup acknowledged.
    acked: Vec<u64>,
    acks: usize,
    /// Client slots are never reused, so a late reply never reaches a new connection.
    clients: Vec<Option<Connection>>,
    /// Forwarded, unanswered requests in seq order: (seq, client slot, session).
    pending: VecDeque<(u64, usize, u32)>,
    seq: u64,
}

impl Primary {
    fn start(args: &NodeArgs) -> anyhow::Result<Primary> {
        let poll = Poll::new()?;
        let mut listener =
            TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut backups = Vec::new();
        for (i, address) in args.backups.iter().enumerate() {
            let stream = connect_with_retry(*address)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(stream);
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry()
                .register(&mut stream, Token(BACKUP_TOKEN_BASE + i), interest)?;
            backups.push(Connection::new(stream));
        }
        Ok(Primary {
            poll,
            listener,
            acked: vec![0; backups.len()],
            backups,
            acks: args.acks,
            clients: Vec::new(),
            pending: VecDeque::new(),
            seq: 0,
        })
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let busy = !self.backpressured() && self.clients.iter().flatten().any(|c| c.readable);
            match self.poll.poll(&mut events, busy.then_some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    Token(t) if t >= CLIENT_TOKEN_BASE => {
                        if let Some(Some(client)) = self.clients.get_mut(t - CLIENT_TOKEN_BASE) {
                            client.readable |= event.is_readable() || event.is_read_closed();
                        }
                    }
                    Token(t) => self.backups[t - BACKUP_TOKEN_BASE].readable |= event.is_readable(),
                }
            }
            self.read_backups()?;
            self.reply_acknowledged();
            self.read_clients();
            for backup in &mut self.backups {
                backup.flush().context("writing to a backup")?;
            }
            for slot in &mut self.clients {
                if slot.as_mut().is_some_and(|client| client.flush().is_err()) {
                    *slot = None;
                }
            }
        }
    }

    fn backpressured(&self) -> bool {
        self.pending.len() >= PENDING_MAX
            || self
                .backups
                .iter()
                .any(|b| b.unsent_bytes() >= BACKUP_BUFFER_BYTES_MAX)
    }

    fn accept(&mut self) -> anyhow::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nodelay(true)?;
                    let token = Token(CLIENT_TOKEN_BASE + self.clients.len());
                    self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.clients.push(Some(Connection::new(stream)));
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn read_backups(&mut self) -> anyhow::Result<()> {
        for (i, backup) in self.backups.iter_mut().enumerate() {
            while backup.readable {
                backup.read_chunk().context("reading from a backup")?;
            }
            let whole = backup.read.len() / 8 * 8;
            if whole > 0 {
                self.acked[i] = self.acked[i].max(frame::u64_at(&backup.read[whole - 8..whole]));
                backup.read.drain(..whole);
            }
        }
        Ok(())
    }

    /// Replies to every request that at least `acks` backups acknowledged.
    fn reply_acknowledged(&mut self) {
        let mut acked = self.acked.clone();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let committed = if self.acks == 0 {
            self.seq
        } else {
            acked[self.acks - 1]
        };
        while let Some(&(seq, slot, session)) = self.pending.front() {
            if seq > committed {
                break;
            }
            self.pending.pop_front();
            if let Some(Some(client)) = self.clients.get_mut(slot) {
                frame::put_reply(&mut client.write, session);
            }
        }
    }

    fn read_clients(&mut self) {
        for slot in 0..self.clients.len() {
            if self.backpressured() {
                return;
            }
            let Some(client) = self.clients[slot].as_mut() else {
                continue;
            };
            if !client.readable {
                continue;
            }
            let result = client.read_chunk();
            let client = self.clients[slot].as_mut().expect("still there");
            let mut pos = 0;
            let mut broken = result.is_err();
            loop {
                match frame::next_frame(&client.read, &mut pos, 4) {
                    Ok(Some(body)) => {
                        self.seq += 1;
                        for backup in &mut self.backups {
                            frame::put_forward(&mut backup.write, self.seq, &body[4..]);
                        }
                        self.pending
                            .push_back((self.seq, slot, frame::u32_at(body)));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            client.read.drain(..pos);
            if broken {
                self.clients[slot] = None;
            }
        }
    }
}

fn connect_with_retry(address: SocketAddr) -> anyhow::Result<std::net::TcpStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() >= deadline => {
                return Err(error).with_context(|| format!("connecting to backup {address}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
