#![allow(dead_code)] // included by several test crates, each using a subset
//! A loopback relay for tests: a network that breaks mid-transfer. Used by the device's push
//! tests and, through `#[path]`, by the host's fleet command tests.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

/// Which way the bytes are counted that end a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// What the client sends (an upload).
    FromClient,
    /// What the server answers (a pull).
    FromServer,
}

/// A relay to `target` that cuts each of its first `cuts` connections once `bytes` bytes went
/// the `cut` way; returns its address.
pub fn breaking_relay(target: String, cut: Cut, bytes: usize, cuts: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().flatten().enumerate() {
            let server = TcpStream::connect(&target).unwrap();
            let limit = if n < cuts { bytes } else { usize::MAX };
            let (up, down) = match cut {
                Cut::FromClient => (limit, usize::MAX),
                Cut::FromServer => (usize::MAX, limit),
            };
            pump(client.try_clone().unwrap(), server.try_clone().unwrap(), up);
            pump(server, client, down);
        }
    });
    address
}

/// Copies `from` to `to` on a thread of its own until `limit` bytes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: usize) {
    std::thread::spawn(move || {
        let (mut sent, mut buffer) = (0, [0u8; 8192]);
        while let Ok(n) = from.read(&mut buffer) {
            let n = n.min(limit - sent);
            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                break;
            }
            sent += n;
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
