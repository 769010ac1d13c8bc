//! The guest's descriptor table: which of wasmer's descriptors each guest descriptor is.
//!
//! wasmer-wasix's own table cannot do what WASI asks of `fd_renumber` (`WasiFs::dup2_at`
//! refuses to replace a preopen, gives the renumbered descriptor the source's *inheriting*
//! rights as its base rights, and fd 3 is its virtual root, which it special-cases
//! everywhere). So the guest gets numbers of its own: every descriptor argument is translated
//! to wasmer's number before wasmer's function runs, a descriptor wasmer creates gets a guest
//! number (the same one when it is free), and `fd_renumber` and `fd_close` are table
//! operations here, wasmer's descriptor staying as it was opened.
//!
//! Each descriptor opened by path also keeps an `O_PATH` descriptor of the same file or
//! directory on the host (the guest process runs inside the container root, so the host's
//! view is the guest's), for what wasmer cannot answer: whether a path climbs out of its
//! directory with "..", setting a path's times, and stats as the kernel has them (wasmer
//! makes inode numbers from path hashes, so two hard links differ).
//!
//! A WASIX module creates descriptors through calls of its own (`fd_dup`, `fd_pipe`,
//! `sock_open`, ...) that this table does not see, so for it the numbers stay wasmer's
//! ([`Descriptors::same_numbers`]), with fd 3 still refused.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use wasmer_wasix::types::wasi::Errno;
use wasmer_wasix::VIRTUAL_ROOT_FD;

/// The host's `O_PATH` descriptor of what a guest descriptor refers to.
pub(super) type Host = Arc<OwnedFd>;

/// One guest descriptor.
#[derive(Clone)]
pub(super) enum Slot {
    /// fd 3: wasmer's virtual root, never handed to the guest. It is "not a preopened
    /// directory" to `fd_prestat_get` (so guests scanning preopens go on to fd 4), can be
    /// closed, and can be renumbered over; anything else on it is BADF.
    Reserved,
    /// wasmer's descriptor `wasmer`; what it is on the host, when known; whether it is
    /// one of the preopens (in this shim they stand for the container's own file system, so
    /// ".." in their paths goes up to the container root, as on Linux; see [`Descriptors::beneath`]).
    Open {
        wasmer: u32,
        host: Option<Host>,
        preopen: bool,
    },
}

/// What `fd_close` must do after the table let go of a guest descriptor.
#[derive(Debug, PartialEq)]
pub(super) enum Closed {
    /// Close this descriptor of wasmer's too.
    Wasmer(u32),
    /// Nothing more: it was the reserved fd 3.
    Reserved,
}

pub(super) struct Descriptors {
    slots: BTreeMap<u32, Slot>,
    /// For WASIX modules: guest numbers are wasmer's.
    same_numbers: bool,
    /// The guest's RLIMIT_NOFILE (soft): it holds at most this many descriptors.
    limit: usize,
}

impl Descriptors {
    /// The table at start: stdio, the reserved fd 3, and the preopens as wasmer numbered
    /// them, each with its host directory when it could be opened.
    pub(super) fn new(preopens: Vec<(u32, Option<Host>)>, same_numbers: bool) -> Self {
        let mut slots = BTreeMap::new();
        for fd in 0..=2 {
            slots.insert(
                fd,
                Slot::Open {
                    wasmer: fd,
                    host: None,
                    preopen: false,
                },
            );
        }
        slots.insert(VIRTUAL_ROOT_FD, Slot::Reserved);
        for (fd, host) in preopens {
            slots.insert(
                fd,
                Slot::Open {
                    wasmer: fd,
                    host,
                    preopen: true,
                },
            );
        }
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX);
        Descriptors {
            slots,
            same_numbers,
            limit,
        }
    }

    /// Whether the guest holds as many descriptors as its RLIMIT_NOFILE allows. wasmer shares
    /// one host file among every descriptor of a file, so without this a guest could open
    /// descriptors without end; with it, it gets EMFILE (WASI's MFILE) as a process would.
    pub(super) fn is_full(&self) -> bool {
        self.slots.len() >= self.limit
    }

    /// wasmer's descriptor for the guest's `fd`.
    pub(super) fn resolve(&self, fd: u32) -> Result<u32, Errno> {
        if self.same_numbers {
            return if fd == VIRTUAL_ROOT_FD {
                Err(Errno::Badf)
            } else {
                Ok(fd)
            };
        }
        match self.slots.get(&fd) {
            Some(Slot::Open { wasmer, .. }) => Ok(*wasmer),
            _ => Err(Errno::Badf),
        }
    }

    /// Whether the guest's `fd` is the reserved fd 3, still open.
    pub(super) fn is_reserved(&self, fd: u32) -> bool {
        matches!(self.slots.get(&fd), Some(Slot::Reserved))
    }

    /// What wasmer's descriptor `wasmer_fd` is on the host, if the table knows.
    pub(super) fn host(&self, wasmer_fd: u32) -> Option<Host> {
        self.slots.values().find_map(|slot| match slot {
            Slot::Open { wasmer, host, .. } if *wasmer == wasmer_fd => host.clone(),
            _ => None,
        })
    }

    /// For a path under wasmer's descriptor `wasmer_fd`, what it must stay beneath: None for
    /// a preopen (or a descriptor the table does not know), else Some(its host descriptor, if
    /// known). WASI resolves every path beneath its directory descriptor: a directory the guest
    /// opened is a capability for what is below it.
    pub(super) fn beneath(&self, wasmer_fd: u32) -> Option<Option<Host>> {
        self.slots.values().find_map(|slot| match slot {
            Slot::Open {
                wasmer,
                host,
                preopen: false,
            } if *wasmer == wasmer_fd => Some(host.clone()),
            _ => None,
        })
    }

    /// Records wasmer's new descriptor `wasmer_fd` and answers the guest's number for it:
    /// the same number when the guest has nothing there, else the lowest free one.
    pub(super) fn opened(&mut self, wasmer_fd: u32, host: Option<Host>) -> u32 {
        let fd = if self.same_numbers || !self.slots.contains_key(&wasmer_fd) {
            wasmer_fd
        } else {
            (0..)
                .find(|fd| !self.slots.contains_key(fd))
                .unwrap_or(wasmer_fd)
        };
        self.slots.insert(
            fd,
            Slot::Open {
                wasmer: wasmer_fd,
                host,
                preopen: false,
            },
        );
        fd
    }

    /// Lets go of the guest's `fd`.
    pub(super) fn close(&mut self, fd: u32) -> Result<Closed, Errno> {
        if self.same_numbers && fd != VIRTUAL_ROOT_FD {
            self.slots.remove(&fd);
            return Ok(Closed::Wasmer(fd));
        }
        match self.slots.remove(&fd) {
            Some(Slot::Open { wasmer, .. }) => Ok(Closed::Wasmer(wasmer)),
            Some(Slot::Reserved) => Ok(Closed::Reserved),
            None => Err(Errno::Badf),
        }
    }

    /// `fd_renumber(from, to)`: `to` becomes what `from` was and `from` is closed. Answers
    /// wasmer's descriptor that `to` held, which the caller closes.
    pub(super) fn renumber(&mut self, from: u32, to: u32) -> Result<Option<u32>, Errno> {
        let source = match self.slots.get(&from) {
            Some(slot @ Slot::Open { .. }) => slot.clone(),
            _ => return Err(Errno::Badf),
        };
        if !self.slots.contains_key(&to) {
            return Err(Errno::Badf);
        }
        if from == to {
            return Ok(None);
        }
        self.slots.remove(&from);
        Ok(match self.slots.insert(to, source) {
            Some(Slot::Open { wasmer, .. }) => Some(wasmer),
            _ => None,
        })
    }

    /// Whether guest numbers are wasmer's (a WASIX module).
    pub(super) fn same_numbers(&self) -> bool {
        self.same_numbers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Descriptors {
        Descriptors::new(vec![(4, None), (5, None)], false)
    }

    #[test]
    fn stdio_and_preopens_keep_their_numbers_and_fd_3_is_reserved() {
        let t = table();
        assert_eq!(t.resolve(1), Ok(1));
        assert_eq!(t.resolve(4), Ok(4));
        assert_eq!(t.resolve(3), Err(Errno::Badf));
        assert!(t.is_reserved(3));
        assert_eq!(t.resolve(6), Err(Errno::Badf));
    }

    #[test]
    fn renumbering_over_a_preopen_moves_the_source_and_hands_back_the_displaced() {
        let mut t = table();
        let fd = t.opened(6, None);
        assert_eq!(fd, 6);
        assert_eq!(t.renumber(6, 4), Ok(Some(4)));
        assert_eq!(t.resolve(4), Ok(6));
        assert_eq!(t.resolve(6), Err(Errno::Badf));
        // wasmer's 4 is closed by the caller; a new wasmer descriptor numbered 6 again (it
        // is not, while the guest's 4 holds it) or 7 gets its own number.
        assert_eq!(t.opened(7, None), 7);
    }

    #[test]
    fn renumbering_over_the_reserved_fd_3_makes_it_an_ordinary_descriptor() {
        let mut t = table();
        t.opened(6, None);
        assert_eq!(t.renumber(6, 3), Ok(None));
        assert_eq!(t.resolve(3), Ok(6));
        assert!(!t.is_reserved(3));
        assert_eq!(t.close(3), Ok(Closed::Wasmer(6)));
        assert_eq!(t.close(3), Err(Errno::Badf));
    }

    #[test]
    fn renumber_needs_both_open_and_is_a_no_op_onto_itself() {
        let mut t = table();
        assert_eq!(t.renumber(9, 4), Err(Errno::Badf));
        assert_eq!(t.renumber(4, 9), Err(Errno::Badf));
        assert_eq!(t.renumber(3, 4), Err(Errno::Badf));
        assert_eq!(t.renumber(4, 4), Ok(None));
        assert_eq!(t.resolve(4), Ok(4));
    }

    #[test]
    fn a_taken_number_gives_the_lowest_free_one() {
        let mut t = table();
        t.opened(6, None);
        t.renumber(6, 4).unwrap();
        // The guest's 6 is free again, and wasmer may hand out its 4 once closed.
        assert_eq!(t.opened(4, None), 6);
        assert_eq!(t.resolve(6), Ok(4));
        assert_eq!(t.close(3), Ok(Closed::Reserved));
        assert_eq!(t.opened(5, None), 3);
    }

    #[test]
    fn paths_stay_beneath_opened_directories_but_not_beneath_preopens() {
        let mut t = table();
        let fd = t.opened(6, None);
        assert!(t.beneath(4).is_none());
        assert!(matches!(t.beneath(6), Some(None)));
        // A preopen renumbered elsewhere is still a preopen; fd 1 is not a directory but
        // wasmer answers for that.
        t.renumber(4, fd).unwrap();
        assert!(t.beneath(4).is_none());
        assert!(t.beneath(1).is_some());
    }

    #[test]
    fn with_wasix_numbers_stay_wasmers_but_fd_3_is_refused() {
        let mut t = Descriptors::new(vec![(4, None)], true);
        assert_eq!(t.resolve(17), Ok(17));
        assert_eq!(t.resolve(3), Err(Errno::Badf));
        assert_eq!(t.opened(9, None), 9);
        assert_eq!(t.close(9), Ok(Closed::Wasmer(9)));
    }
}
