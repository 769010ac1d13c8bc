//! Signal dispositions of the guest process.
//!
//! WASI preview 1 has no signals, and WASIX only looks at them on syscall boundaries, so a
//! guest in a compute loop would never notice a SIGTERM. The guest process therefore ends
//! itself on every terminating signal, with 128 + the signal as its status, as a native
//! process killed by it reports. A handler (rather than the default action) also makes this
//! hold when the guest is PID 1 of a PID namespace, where the kernel drops signals that have
//! no handler: a wasm container is never an unkillable PID 1.

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Signals whose default action terminates a process, and that wasmer does not use for its
/// own trap handling (SIGSEGV, SIGBUS, SIGILL and SIGFPE stay with wasmer; SIGKILL and SIGSTOP
/// cannot be caught).
const TERMINATING: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

extern "C" fn exit_on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends every thread of the process at once.
    unsafe { libc::_exit(128 + sig) }
}

/// Installs the guest's dispositions. Call first thing in the guest process.
pub fn install() -> nix::Result<()> {
    // The shim's signal mask and ignored signals are inherited through exec; start clean.
    signal::sigprocmask(
        signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )?;
    let exit = SigAction::new(
        SigHandler::Handler(exit_on_signal),
        SaFlags::empty(),
        SigSet::all(),
    );
    for sig in TERMINATING {
        // SAFETY: the handler only calls _exit.
        unsafe { signal::sigaction(*sig, &exit)? };
    }
    // A guest writing to a closed pipe gets EPIPE from its write, as WASI reports errors,
    // instead of dying.
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: ignoring a signal installs no code.
    unsafe { signal::sigaction(Signal::SIGPIPE, &ignore)? };
    Ok(())
}
