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
        // (copied-on-write) page, so MADV_DONTNEED only drops page-table entries: the next
        // access maps the same file page again, and no memory the program wrote is lost.
        unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The `(start, end)` of every mapping in `smaps` that is private, not writable, backed by
/// a file, resident, and holds no anonymous page (a page written through a relocation
/// or by a debugger, which `MADV_DONTNEED` would throw away).
fn clean_file_regions(smaps: &str) -> Vec<(usize, usize)> {
    let mut regions = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut resident = false;
    for line in smaps.lines() {
        if let Some(region) = mapping(line) {
            current = region;
            resident = false;
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let kib = value.trim().trim_end_matches(" kB").parse::<u64>().ok();
        match field {
            "Rss" => resident = kib.is_some_and(|k| k > 0),
            "Anonymous" => {
                let region = current.take().filter(|_| resident && kib == Some(0));
                regions.extend(region);
            }
            _ => {}
        }
    }
    regions
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

    #[test]
    fn releasing_keeps_the_process_working() {
        let data: Vec<u64> = (0..100_000).collect();
        release_startup_pages();
        // Code and read-only data come back from the page cache; the heap is untouched.
        assert_eq!(data.iter().sum::<u64>(), 4_999_950_000);
        assert!(format!("{:?}", std::env::args()).contains('['));
    }
}
