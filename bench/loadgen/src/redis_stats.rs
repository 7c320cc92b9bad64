//! Redis commands counted at the server: the sum of `calls=` over `INFO
//! commandstats` (the INFO commands this module sends are left out), read
//! around a phase to give Redis commands per call or per connect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Commands Redis has executed so far (every client), minus `INFO` itself.
pub fn commands(addr: SocketAddr) -> Option<u64> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    writer
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    // RESP2 bulk string `$<len>` (RESP3 verbatim `=<len>` with a `txt:` prefix).
    let len: usize = header.trim_end().strip_prefix(['$', '='])?.parse().ok()?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(total(&String::from_utf8_lossy(&body)))
}

/// The sum of `calls=` over `cmdstat_*` lines, `cmdstat_info` excluded.
fn total(info: &str) -> u64 {
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter(|line| !line.starts_with("info:"))
        .filter_map(|line| {
            let (_, rest) = line.split_once(':')?;
            rest.strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_is_not_counted() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=7,usec=1,usec_per_call=0.1,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_info:calls=100,usec=5\r\ncmdstat_spublish:calls=3,usec=1\r\n";
        assert_eq!(super::total(info), 10);
    }
}
