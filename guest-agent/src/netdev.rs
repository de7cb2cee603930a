//! Network interface counters of a process's network namespace, from `/proc/<pid>/net/dev`
//! (the file shows the namespace of the process that reads it through `<pid>`), in runc's
//! `NetworkInterface` shape for the `stats` answer.

use vessel_protocol::stats::NetworkInterface;

/// Every interface of `text` (the contents of a `net/dev` file): after two header lines, one
/// line per interface, `name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed
/// multicast tx_bytes tx_packets tx_errs tx_drop ...`. Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<NetworkInterface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if f.len() < 12 {
                return None;
            }
            Some(NetworkInterface {
                name: name.trim().to_owned(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// The interfaces of `pid`'s network namespace; empty when the file cannot be read.
pub fn read(pid: i32) -> Vec<NetworkInterface> {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|t| parse(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0: 9876543    4321    1    2    0     0          0         3   123456     789    4    5    0     0       0          0
broken line
";
        let ifs = parse(text);
        assert_eq!(ifs.len(), 2);
        assert_eq!(ifs[0].name, "lo");
        assert_eq!((ifs[0].rx_bytes, ifs[0].tx_packets), (1234, 12));
        let eth = &ifs[1];
        assert_eq!(eth.name, "eth0");
        assert_eq!(
            (eth.rx_bytes, eth.rx_packets, eth.rx_errors, eth.rx_dropped),
            (9876543, 4321, 1, 2)
        );
        assert_eq!(
            (eth.tx_bytes, eth.tx_packets, eth.tx_errors, eth.tx_dropped),
            (123456, 789, 4, 5)
        );
    }
}
