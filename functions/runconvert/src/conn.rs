//! Connection limits of the embedded server, for HTTP and HTTPS alike (an acceptor of
//! `axum_server`, under TLS when it is on):
//! - a cap on the connections open from one client address (`429` past it);
//! - a cap on all open connections, under the process's descriptor limit, past which new
//!   ones are shed with `503` and `Retry-After` instead of starving the server;
//! - silence timeouts: a connection whose answer stops moving (a client that does not
//!   read), or that moves no byte while a request is open for longer than any API call
//!   waits, is closed. (The time to send a request's headers, and so how long a
//!   kept-alive connection may sit idle, is hyper's `header_read_timeout`.)

use axum_server::accept::Accept;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Most connections open from one address (0: no cap).
    pub per_ip: usize,
    /// Most connections open in all.
    pub total: usize,
    /// Before the first byte of a request, and after an answer: the longest silence.
    pub idle: Duration,
    /// While a request is open (its answer not yet begun): the longest silence both ways.
    /// Longer than any wait an API call may hold (`/wait` and the like).
    pub busy: Duration,
    /// HTTPS: a refused connection is closed without an HTTP answer.
    pub tls: bool,
}

/// The most connections this process can hold, from its descriptor limit (raised to the
/// hard limit first), leaving room for the database, files and tools.
pub fn connection_budget() -> usize {
    // SAFETY: getrlimit/setrlimit on this process's own descriptor limit.
    let soft = unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 256;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 20);
    // A quarter, and at least 64 descriptors, stay for everything else.
    soft.saturating_sub((soft / 4).max(64)).max(16)
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The acceptor: admits or refuses each new connection and watches the admitted ones.
#[derive(Clone)]
pub struct Guarded {
    limits: Arc<ConnLimits>,
    counts: Arc<Mutex<Counts>>,
}

/// A connection's place in the counts, given back when it closes.
pub struct Ticket {
    counts: Arc<Mutex<Counts>>,
    ip: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = c.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
            }
        }
    }
}

enum Refusal {
    TooManyFromAddress,
    Overloaded,
}

impl Guarded {
    pub fn new(limits: ConnLimits) -> Self {
        Guarded {
            limits: Arc::new(limits),
            counts: Arc::default(),
        }
    }

    fn admit(&self, ip: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let ip = ip.map(client_of);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.total {
            return Err(Refusal::Overloaded);
        }
        if let Some(ip) = ip {
            let n = c.per_ip.entry(ip).or_default();
            if self.limits.per_ip > 0 && *n >= self.limits.per_ip {
                return Err(Refusal::TooManyFromAddress);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Ticket {
            counts: self.counts.clone(),
            ip,
        })
    }
}

/// The address a client is counted under: IPv4 as it is (an IPv4-mapped IPv6 address
/// too), IPv6 by its /64, which one client usually holds whole.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn refusal_answer(why: &Refusal) -> Vec<u8> {
    let (status, code, message) = match why {
        Refusal::TooManyFromAddress => (
            "429 Too Many Requests",
            "rate_limited",
            "too many connections from your address; close some and try again",
        ),
        Refusal::Overloaded => (
            "503 Service Unavailable",
            "overloaded",
            "the server is at its connection limit; try again shortly",
        ),
    };
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status}\r\nRetry-After: 5\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S: Send + 'static> Accept<TcpStream, S> for Guarded {
    type Stream = Watched;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Watched, S)>> + Send>>;

    fn accept(&self, mut stream: TcpStream, service: S) -> Self::Future {
        let ip = stream.peer_addr().ok().map(|a| a.ip());
        let admitted = self.admit(ip);
        let limits = self.limits.clone();
        Box::pin(async move {
            let ticket = match admitted {
                Ok(t) => t,
                Err(why) => {
                    if !limits.tls {
                        // A short answer, if the client takes it at once; then closed.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal_answer(&why))).await;
                        let _ = stream.shutdown().await;
                    }
                    return Err(io::Error::other("connection refused at a limit"));
                }
            };
            let _ = stream.set_nodelay(true);
            Ok((Watched::new(stream, ticket, &limits), service))
        })
    }
}

/// An admitted connection: closed when it goes silent for longer than its state allows.
pub struct Watched {
    inner: TcpStream,
    timer: Pin<Box<Sleep>>,
    idle: Duration,
    busy: Duration,
    _ticket: Ticket,
}

impl Watched {
    fn new(inner: TcpStream, ticket: Ticket, limits: &ConnLimits) -> Self {
        Watched {
            inner,
            timer: Box::pin(tokio::time::sleep(limits.idle)),
            idle: limits.idle,
            busy: limits.busy,
            _ticket: ticket,
        }
    }

    fn rearm(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }

    /// After a write: an answer is going out, so from here the client has `idle` to read
    /// on or ask again; a write stuck past the deadline ends the connection.
    fn wrote(&mut self, written: Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    let idle = self.idle;
                    self.rearm(idle);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    /// Whether the silence has gone on too long (registers the wake-up otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    // A request is coming in: the server may take its time to answer.
                    let busy = self.busy;
                    self.rearm(busy);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(written, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
