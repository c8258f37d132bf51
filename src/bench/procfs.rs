//! What Linux's /proc tells about a process: CPU time used and peak resident memory.

use std::collections::BTreeMap;
use std::io;
use std::process::Command;
use std::sync::OnceLock;

/// CPU seconds (user + system) and peak RSS of one process at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// `VmHWM`: the most resident memory the process has had, in bytes.
    pub peak_rss_bytes: u64,
    /// CPU seconds of the live threads, summed by thread name (`tokio-rt-worker`, ...).
    pub threads: BTreeMap<String, f64>,
}

/// Reads `/proc/<pid>`; `None` reads the calling process (`/proc/self`).
pub fn usage(pid: Option<u32>) -> io::Result<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| malformed("stat"))?;
    Ok(Usage {
        cpu_seconds: ticks as f64 / clock_ticks_per_second(),
        peak_rss_bytes: peak_rss_kib(&status).ok_or_else(|| malformed("status"))? * 1024,
        threads: threads(&dir)?,
    })
}

/// A thread may end between listing and reading; it is skipped.
fn threads(dir: &str) -> io::Result<BTreeMap<String, f64>> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("{dir}/task"))? {
        let path = task?.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        if let Some(ticks) = cpu_ticks(&stat) {
            *by_name.entry(name.trim().to_owned()).or_insert(0.0) +=
                ticks as f64 / clock_ticks_per_second();
        }
    }
    Ok(by_name)
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc {file} format"),
    )
}

/// utime + stime. The command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its closing parenthesis: state is field 3, utime 14, stime 15.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(field(14)? + field(15)?)
}

fn peak_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `USER_HZ`, asked of `getconf` once (the safe way without libc); Linux fixes it at 100
/// almost everywhere, which is the fallback.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (shopper (x) y) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000000 500";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (truncated) S 1"), None);
    }

    #[test]
    fn peak_rss_comes_from_vmhwm() {
        let status = "Name:\tshopper-bridge\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\n";
        assert_eq!(peak_rss_kib(status), Some(51234));
        assert_eq!(peak_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn own_usage_is_readable() {
        let usage = usage(None).unwrap();
        assert!(usage.peak_rss_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
        assert!(!usage.threads.is_empty());
        let by_thread: f64 = usage.threads.values().sum();
        assert!(by_thread <= usage.cpu_seconds + 0.05);
    }
}
