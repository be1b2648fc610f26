//! Hosts as network namespaces, for tests of what crosses a network: a database namespace
//! holding a bridge, and N host namespaces each joined to it by a veth pair. Everything lives
//! inside namespaces this helper creates (nothing is added to the machine's own network), and
//! all of it goes when the [`Net`] is dropped.
//!
//! The database namespace's address is [`Net::db_addr`]; host `i` is `10.77.0.(10 + i)`.
//! [`Net::cut`] takes a host's link down (its packets are dropped, as by a cut cable: no
//! connection is refused, they all hang) and [`Net::restore`] brings it back.

#![allow(dead_code)]

use std::process::Command;

/// The subnet's first three octets; private to the namespaces, so runs never collide.
const SUBNET: &str = "10.77.0";

/// A set of network namespaces: one for the database, `hosts` for nodes.
pub struct Net {
    prefix: String,
    hosts: usize,
}

/// Why the namespaces cannot be made here (not root, no `ip`, no namespace support).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns` fails here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` (iproute2) not found: {e}")),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Net {
    /// Creates the database namespace with its bridge and `hosts` host namespaces joined to it.
    pub fn new(hosts: usize) -> Net {
        let net = Net {
            prefix: format!("dbos{}", std::process::id()),
            hosts,
        };
        let db = net.db();
        ip(&["netns", "add", &db]);
        ip(&["-n", &db, "link", "set", "lo", "up"]);
        ip(&["-n", &db, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &db,
            "addr",
            "add",
            &format!("{}/24", net.db_addr()),
            "dev",
            "br0",
        ]);
        ip(&["-n", &db, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let h = net.host(i);
            ip(&["netns", "add", &h]);
            ip(&["-n", &h, "link", "set", "lo", "up"]);
            // The pair is made in the host's namespace; its bridge end moves to the database's.
            let peer = format!("v{i}");
            ip(&[
                "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", &peer,
            ]);
            ip(&["-n", &h, "link", "set", &peer, "netns", &db]);
            ip(&["-n", &db, "link", "set", &peer, "master", "br0"]);
            ip(&["-n", &db, "link", "set", &peer, "up"]);
            ip(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("{}/24", net.host_addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &h, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Name of the database namespace.
    pub fn db(&self) -> String {
        format!("{}-db", self.prefix)
    }

    /// Name of host `i`'s namespace.
    pub fn host(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// The database namespace's address on the bridge.
    pub fn db_addr(&self) -> String {
        format!("{SUBNET}.1")
    }

    /// Host `i`'s address.
    pub fn host_addr(&self, i: usize) -> String {
        format!("{SUBNET}.{}", 10 + i)
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec` execs it: the
    /// child's pid is the program's).
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Cuts host `i` off: its link goes down, and whatever it sends or waits for hangs.
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.host(i), "link", "set", "eth0", "down"]);
    }

    /// Brings host `i`'s link back.
    pub fn restore(&self, i: usize) {
        ip(&["-n", &self.host(i), "link", "set", "eth0", "up"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.host(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.db()])
            .status();
    }
}
