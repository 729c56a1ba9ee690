//! Loopback ports for the servers the tests start, without races. A port is reserved by a socket
//! that is bound (with SO_REUSEADDR) and never listens, held for the server's whole life:
//! - the kernel never hands a bound port to anyone else's `bind(port 0)`, so no other test server
//!   (of this binary or another one running at the same time) can be given it;
//! - the server binds the same port itself (moto/werkzeug, s3s-fs/tokio and Prometheus/Go all set
//!   SO_REUSEADDR, which Linux allows beside a socket that does not listen) and listens there;
//! - while the server is stopped, a connection is refused at once: the endpoint stays unreachable
//!   until the test starts the server again on the same port.
//!
//! "Ready" means the server answered in its own protocol, and that the process the test started is
//! still the one running (a server that exits early is reported with its exit status).

use anyhow::{Context, bail};
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Child;
use std::time::{Duration, Instant};

pub struct ReservedPort {
    _socket: Socket,
    pub port: u16,
}

impl ReservedPort {
    pub fn new() -> anyhow::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        let port = socket
            .local_addr()?
            .as_socket()
            .context("a loopback socket has an IP address")?
            .port();
        Ok(Self {
            _socket: socket,
            port,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Waits until `answers` says the server speaks its protocol, failing at once if `child` exits.
pub fn wait_serving(
    child: &mut Child,
    what: &str,
    mut answers: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before it served");
        }
        if answers() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer in 60s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "runs with the end-to-end tests (`make test` passes --ignored to this crate)"]
    fn a_reserved_port_refuses_connections_and_is_not_given_out_again() -> anyhow::Result<()> {
        let held: Vec<ReservedPort> = (0..200)
            .map(|_| ReservedPort::new())
            .collect::<Result<_, _>>()?;
        for reserved in &held {
            assert!(std::net::TcpStream::connect(reserved.addr()).is_err());
        }
        for _ in 0..200 {
            let other = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = other.local_addr()?.port();
            assert!(
                held.iter().all(|r| r.port != port),
                "port {port} given out twice"
            );
        }
        // The server the port is for can listen on it (std sets SO_REUSEADDR, like the servers).
        let server = std::net::TcpListener::bind(held[0].addr())?;
        std::net::TcpStream::connect(held[0].addr())?;
        drop(server);
        assert!(std::net::TcpStream::connect(held[0].addr()).is_err());
        Ok(())
    }
}
