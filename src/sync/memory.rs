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
    Cgroup(String),
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

/// The cgroup's memory limit, when one is set: the smallest of the process's own cgroup and
/// its ancestors (v2 `memory.max`, v1 `memory.limit_in_bytes`), found through
/// `/proc/self/cgroup`. A container with its own cgroup namespace sees its cgroup as `/`
/// (the files at the top of `/sys/fs/cgroup`); one without (cgroup v1 hosts, `--cgroupns
/// host`) sees the host's path, which is followed, so its limit is not missed.
fn cgroup_limit() -> Option<(u64, String)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_under(std::path::Path::new("/sys/fs/cgroup"), &own)
}

/// [`cgroup_limit`] with the cgroup file system at `root` and `/proc/self/cgroup`'s text.
fn limit_under(root: &std::path::Path, own: &str) -> Option<(u64, String)> {
    // `0::/path` is v2; `N:memory:/path` (or `N:...,memory,...:/path`) is v1.
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            dirs.push(dir.join(file));
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    if dirs.is_empty() {
        // No /proc/self/cgroup: the top of the hierarchy, as a namespaced container sees it.
        dirs = vec![root.join("memory.max"), root.join("memory").join("memory.limit_in_bytes")];
    }
    dirs.into_iter()
        .filter_map(|file| {
            let b = parse_limit(&std::fs::read_to_string(&file).ok()?)?;
            Some((b, file.display().to_string()))
        })
        .min_by_key(|(b, _)| *b)
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

    /// The smallest limit of the process's cgroup and its ancestors, on v2 and on v1 where
    /// the path is the host's (no cgroup namespace); none where every level is unlimited.
    #[test]
    fn the_cgroup_limit_is_the_smallest_on_the_path_to_the_process() {
        let root = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let v1 = "4:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/kubepods/pod1/c1\n0::/\n";
        put("memory/memory.limit_in_bytes", "9223372036854771712\n");
        put("memory/kubepods/pod1/c1/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(limit_under(root.path(), v1), None, "unlimited everywhere");
        put("memory/kubepods/pod1/memory.limit_in_bytes", "536870912\n");
        put("memory/kubepods/memory.limit_in_bytes", "1073741824\n");
        let (bytes, file) = limit_under(root.path(), v1).unwrap();
        assert_eq!(bytes, 512 << 20, "the pod's, below the node's");
        assert!(file.ends_with("memory/kubepods/pod1/memory.limit_in_bytes"), "{file}");
        // v2 in a namespaced container: `0::/` is the top.
        put("memory.max", "268435456\n");
        let (bytes, file) = limit_under(root.path(), "0::/\n").unwrap();
        assert_eq!((bytes, file.ends_with("/memory.max")), (256 << 20, true));
        // v2 on the host's path, with `max` at the leaf.
        put("system.slice/xaas.service/memory.max", "max\n");
        put("system.slice/memory.max", "134217728\n");
        let (bytes, _) = limit_under(root.path(), "0::/system.slice/xaas.service\n").unwrap();
        assert_eq!(bytes, 128 << 20);
        // No /proc/self/cgroup: the top files.
        assert_eq!(limit_under(root.path(), "").map(|l| l.0), Some(256 << 20));
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
            source: LimitSource::Cgroup("/sys/fs/cgroup/memory.max".into()),
        };
        let e = container.judge("hr", 1, 500 << 20).unwrap_err().to_string();
        assert!(e.contains("the container's memory limit, /sys/fs/cgroup/memory.max"), "{e}");
    }
}
