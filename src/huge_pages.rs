//! Huge pages for a large module's compiled code.
//!
//! A guest loading a cached module has wasmer copy the machine code into anonymous memory
//! wasmer maps itself (its code memory), page by page: for CPython, 9 MiB of code, 2,300 page
//! faults that each zero a page about to be overwritten, then instruction TLB misses while it
//! runs. On a host whose transparent huge pages are `madvise` (Debian's default) the kernel
//! uses 2 MiB pages only where a program asks, and wasmer never asks. This binary therefore
//! defines `mmap` itself: the binary's Rust code, wasmer's included, binds to it at link time
//! (glibc's own calls, malloc's among them, do not come here). In a guest process only, it
//! advises huge pages for a large anonymous mapping made writable, as code memory is made.
//! Smaller mappings, and every mapping of the shim itself, are left as the kernel makes them.
//! (glibc's allocator is asked the same through its `glibc.malloc.hugetlb` tunable, in the
//! guest's environment: see `guest::spawn`.)

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once in a guest process, before its engine maps anything.
static ADVISE: AtomicBool = AtomicBool::new(false);

/// A mapping this large or larger is advised: a big module's code memory. A small module's
/// code (hello's is a few KiB) stays in small pages, so an idle guest costs no more memory.
const LARGE: usize = 4 << 20;

/// From now on, this process's large anonymous writable mappings are advised as huge pages.
pub fn advise_for_guest() {
    ADVISE.store(true, Ordering::Relaxed);
}

/// glibc's `mmap`, made by the system call, then advised (see the module's comment).
///
/// # Safety
/// As `mmap(2)`: the caller owns what it maps.
#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut libc::c_void,
    len: libc::size_t,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> *mut libc::c_void {
    // SAFETY: the raw system call with the caller's arguments; on failure it returns -1 (that
    // is MAP_FAILED) and sets errno, as glibc's wrapper does.
    let mapped = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            addr,
            len,
            prot as libc::c_long,
            flags as libc::c_long,
            fd as libc::c_long,
            offset as libc::c_long,
        )
    } as *mut libc::c_void;
    let anonymous_writable = flags & libc::MAP_ANONYMOUS != 0 && prot & libc::PROT_WRITE != 0;
    if mapped != libc::MAP_FAILED
        && anonymous_writable
        && len >= LARGE
        && ADVISE.load(Ordering::Relaxed)
    {
        // SAFETY: advice on the range just mapped; a refusal (e.g. a seccomp profile without
        // madvise) leaves it as mapped. errno is kept for the caller, who sees success.
        unsafe {
            let errno = *libc::__errno_location();
            libc::madvise(mapped, len, libc::MADV_HUGEPAGE);
            *libc::__errno_location() = errno;
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's flags of the mapping that starts at `addr` (`hg`: huge pages advised).
    fn vm_flags(addr: *mut libc::c_void) -> String {
        let start = format!("{:x}-", addr as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap_or_else(|| panic!("no mapping at {start}"))
            .to_string()
    }

    fn map(len: usize, prot: libc::c_int) -> *mut libc::c_void {
        // SAFETY: a fresh anonymous private mapping, unmapped by the caller.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        p
    }

    /// One test, as ADVISE is the process's: off, then on as in a guest.
    #[test]
    fn only_a_guests_large_writable_anonymous_mappings_are_advised_as_huge_pages() {
        let advised = |p| vm_flags(p).split_whitespace().any(|f| f == "hg");
        let before = map(8 << 20, libc::PROT_READ | libc::PROT_WRITE);
        assert!(!advised(before), "a shim's mapping is left alone");
        advise_for_guest();
        let large = map(8 << 20, libc::PROT_READ | libc::PROT_WRITE);
        let small = map(1 << 20, libc::PROT_READ | libc::PROT_WRITE);
        let reserved = map(8 << 20, libc::PROT_NONE);
        assert!(advised(large), "{}", vm_flags(large));
        assert!(!advised(small));
        assert!(!advised(reserved));
        // A failure is reported as glibc's mmap reports it.
        // SAFETY: an invalid request (length 0), which maps nothing.
        let failed = unsafe {
            mmap(
                std::ptr::null_mut(),
                0,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_eq!(failed, libc::MAP_FAILED);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINVAL)
        );
        for (p, len) in [
            (before, 8 << 20),
            (large, 8 << 20),
            (small, 1 << 20),
            (reserved, 8 << 20),
        ] {
            // SAFETY: each was mapped above with this length and is no longer used.
            unsafe { libc::munmap(p, len) };
        }
    }
}
