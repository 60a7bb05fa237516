//! The memory a run may hold (`jobs[].max_memory_mb`, else the container's cgroup limit),
//! checked while the pull grows: a pull that reaches [`STOP_SHARE`] of it stops before
//! anything is sent, with an error naming the figures, instead of the process being killed
//! by the kernel mid-run (mid-session, perhaps).
//!
//! What is compared is the process's resident memory (`VmRSS` of `/proc/self/status`): the
//! pull's indexes and buffers, plus whatever else the process holds (the daemon's other
//! work too), which is what the kernel counts. Where neither figure can be read (not Linux),
//! nothing is checked.

use super::SyncError;

/// The share of the limit a pull may reach: the rest is left for planning and sending.
pub const STOP_SHARE: f64 = 0.9;

/// Records read between two checks (a check reads one small file).
pub const CHECK_EVERY: u64 = 20_000;

/// Where a limit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// `jobs[].max_memory_mb`.
    Config,
    /// The container's limit: the file it was read from.
    Cgroup(&'static str),
}

/// A run's memory limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl MemoryLimit {
    /// The job's limit: `max_memory_mb` when set, else the container's, else none.
    pub fn of(configured: Option<u64>) -> Option<Self> {
        match configured {
            Some(bytes) => Some(Self { bytes, source: LimitSource::Config }),
            None => cgroup_limit()
                .map(|(bytes, file)| Self { bytes, source: LimitSource::Cgroup(file) }),
        }
    }

    /// `Err` when the process holds more than [`STOP_SHARE`] of the limit, after `read`
    /// records of `job`'s pull.
    pub fn check(&self, job: &str, read: u64) -> Result<(), SyncError> {
        let Some(resident) = resident_bytes() else { return Ok(()) };
        self.judge(job, read, resident)
    }

    /// [`Self::check`] for a given resident size.
    pub fn judge(&self, job: &str, read: u64, resident: u64) -> Result<(), SyncError> {
        let stop = (self.bytes as f64 * STOP_SHARE) as u64;
        if resident <= stop {
            return Ok(());
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let from = match &self.source {
            LimitSource::Config => format!("max_memory_mb: {:.0}", mib(self.bytes)),
            LimitSource::Cgroup(file) => format!("the container's memory limit, {file}"),
        };
        Err(SyncError::OutOfMemory(format!(
            "the pull of job `{job}` holds {:.0} MiB after {read} records, over {:.0}% of its memory limit of {:.0} MiB ({from}); \
             nothing was sent: give the job more memory (max_memory_mb and the container's limit) or split its source",
            mib(resident),
            STOP_SHARE * 100.0,
            mib(self.bytes),
        )))
    }
}

/// The process's resident memory, from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 =
        line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The cgroup's memory limit (v2 `memory.max`, or v1 `memory.limit_in_bytes`), when set.
fn cgroup_limit() -> Option<(u64, &'static str)> {
    const V2: &str = "/sys/fs/cgroup/memory.max";
    const V1: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
    [V2, V1].into_iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        parse_limit(&text).map(|b| (b, file))
    })
}

/// `max` (v2) and v1's "unlimited" (a number near 2^63) are no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let b: u64 = text.trim().parse().ok()?;
    (b < 1 << 60).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_files_and_the_resident_size_are_read() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        let status = "Name:\txaas\nVmPeak:\t  900 kB\nVmRSS:\t   123456 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 1 << 20));
        }
    }

    #[test]
    fn a_pull_over_nine_tenths_of_the_limit_stops_naming_the_figures() {
        let limit = MemoryLimit { bytes: 100 << 20, source: LimitSource::Config };
        assert!(limit.judge("hr", 10, 90 << 20).is_ok());
        let e = limit.judge("hr", 40_000, 95 << 20).unwrap_err().to_string();
        assert!(e.contains("holds 95 MiB after 40000 records"), "{e}");
        assert!(e.contains("memory limit of 100 MiB (max_memory_mb: 100)"), "{e}");
        assert!(e.contains("nothing was sent"), "{e}");
        let container = MemoryLimit {
            bytes: 512 << 20,
            source: LimitSource::Cgroup("/sys/fs/cgroup/memory.max"),
        };
        let e = container.judge("hr", 1, 500 << 20).unwrap_err().to_string();
        assert!(e.contains("the container's memory limit, /sys/fs/cgroup/memory.max"), "{e}");
    }
}
