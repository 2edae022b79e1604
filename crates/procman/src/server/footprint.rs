//! The supervisor's resident memory once it has started.
//!
//! Most of an idle supervisor's RSS is not data but code: pages of the binary and its
//! libraries mapped while parsing the command line and the config, building the runtime
//! and preparing the log directory. The kernel maps file pages around each fault (64 KiB
//! by default), so start-up leaves several MiB of code mapped that the steady path never
//! runs again. [`release_startup_pages`] unmaps the clean, read-only file pages and gives
//! free heap back; what the supervisor runs afterwards faults back in (from the page
//! cache: nothing is read from disk), so its RSS is what it actually uses.

use std::ffi::c_void;

/// Unmaps the read-only file-backed pages of this process that hold no private copy, and
/// trims the heap. Harmless at any time: nothing is lost, only mapped again on next use.
pub fn release_startup_pages() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_regions(&smaps) {
        // SAFETY: the region is a private, read-only mapping of a file with no anonymous
        // (copied-on-write) page, resident or swapped out, so MADV_DONTNEED only drops
        // page-table entries: the next access maps the same file page again, and no
        // memory the program wrote is lost.
        unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The `(start, end)` of every mapping in `smaps` that is private, not writable, backed by
/// a file, resident, and holds no anonymous page, resident or swapped out (a page written
/// through a relocation or by a debugger, which `MADV_DONTNEED` would throw away).
fn clean_file_regions(smaps: &str) -> Vec<(usize, usize)> {
    let mut regions = Vec::new();
    let mut current: Option<Candidate> = None;
    for line in smaps.lines() {
        if let Some(region) = mapping(line) {
            regions.extend(current.take().and_then(Candidate::clean));
            current = region.map(|region| Candidate {
                region,
                resident: false,
                anonymous: None,
                swap: None,
            });
            continue;
        }
        let (Some(candidate), Some((field, value))) = (current.as_mut(), line.split_once(':'))
        else {
            continue;
        };
        let kib = value.trim().trim_end_matches(" kB").parse::<u64>().ok();
        match field {
            "Rss" => candidate.resident = kib.is_some_and(|k| k > 0),
            "Anonymous" => candidate.anonymous = kib,
            "Swap" => candidate.swap = kib,
            _ => {}
        }
    }
    regions.extend(current.and_then(Candidate::clean));
    regions
}

/// A mapping that may be released, with what its `smaps` entry says of its pages.
struct Candidate {
    region: (usize, usize),
    resident: bool,
    /// Resident anonymous pages, in KiB.
    anonymous: Option<u64>,
    /// Swapped-out anonymous pages, in KiB.
    swap: Option<u64>,
}

impl Candidate {
    fn clean(self) -> Option<(usize, usize)> {
        (self.resident && self.anonymous == Some(0) && self.swap == Some(0)).then_some(self.region)
    }
}

/// A mapping's header line (`start-end perms offset dev inode [path]`): `Some(None)` for
/// one that must stay (writable, shared, anonymous), `None` for any other line.
fn mapping(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?.as_bytes();
    // After the offset and the device.
    let inode: u64 = fields.nth(2)?.parse().ok()?;
    let keep = perms.len() != 4 || perms[1] == b'w' || perms[3] != b'p' || inode == 0;
    Some((!keep && end > start).then_some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5579693ab000-5579698dd000 r-xp 00214000 fe:00 6138513    /usr/bin/procman
Size:               5320 kB
Rss:                3912 kB
Anonymous:             0 kB
Swap:                  0 kB
5579698dd000-557969934000 r--p 00745000 fe:00 6138513    /usr/bin/procman
Rss:                 348 kB
Anonymous:           348 kB
557969934000-557969936000 rw-p 0079b000 fe:00 6138513    /usr/bin/procman
Rss:                   8 kB
Anonymous:             8 kB
5579a64b3000-5579a64f5000 rw-p 00000000 00:00 0          [heap]
Rss:                 264 kB
Anonymous:           264 kB
7f6c660de000-7f6c66234000 r-xp 00026000 fe:00 326279     /usr/lib/libc.so.6
Rss:                 968 kB
Anonymous:             0 kB
Swap:                  0 kB
7f6c66300000-7f6c66310000 r--p 00000000 fe:00 326280     /usr/lib/locale
Rss:                   0 kB
Anonymous:             0 kB
7f6c66400000-7f6c66410000 r--s 00000000 00:05 77         /dev/shm/x
Rss:                  64 kB
Anonymous:             0 kB
7ffc0d9fb000-7ffc0d9fd000 r-xp 00000000 00:00 0          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_read_only_file_pages_are_released() {
        assert_eq!(
            clean_file_regions(SMAPS),
            [
                (0x5579693ab000, 0x5579698dd000),
                (0x7f6c660de000, 0x7f6c66234000)
            ]
        );
    }

    /// Copied-on-write pages that were swapped out count under `Swap`, not `Anonymous`:
    /// `MADV_DONTNEED` would free their swap slots and map the file's page back, undoing
    /// the relocations (or a debugger's writes) they hold.
    #[test]
    fn a_mapping_with_swapped_out_private_pages_is_kept() {
        let smaps = "\
7f6c66200000-7f6c66210000 r--p 001d5000 fe:00 326279     /usr/lib/libc.so.6
Rss:                  16 kB
Anonymous:             0 kB
Swap:                 48 kB
7f6c660de000-7f6c66234000 r-xp 00026000 fe:00 326279     /usr/lib/libc.so.6
Rss:                 968 kB
Anonymous:             0 kB
Swap:                  0 kB
";
        assert_eq!(
            clean_file_regions(smaps),
            [(0x7f6c660de000, 0x7f6c66234000)]
        );
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        let data: Vec<u64> = (0..100_000).collect();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(
            !clean_file_regions(&smaps).is_empty(),
            "the kernel's smaps: nothing to release"
        );
        release_startup_pages();
        // Code and read-only data come back from the page cache; the heap is untouched.
        assert_eq!(data.iter().sum::<u64>(), 4_999_950_000);
        assert!(format!("{:?}", std::env::args()).contains('['));
    }
}
