//! The fixes to `poll_oneoff`: descriptors in subscriptions are the guest's numbers, and clock
//! subscriptions with a zero timeout fire at once.

use wasmer::{RuntimeError, Value};

use super::memory::{memory_error, read_u32, read_u64, read_u8};
use super::{i32_arg, Call};

/// WASI's `subscription`: 48 bytes, the tag at 8; the clock's timeout (u64) at 24, or the
/// descriptor (u32) of an fd_read/fd_write subscription at 16.
const SUBSCRIPTION_SIZE: u64 = 48;
const SUBSCRIPTION_TAG: u64 = 8;
const SUBSCRIPTION_CLOCK_TIMEOUT: u64 = 24;
const SUBSCRIPTION_FD: u64 = 16;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
/// A descriptor number no table holds: wasmer answers its subscription with BADF.
const NO_DESCRIPTOR: u32 = u32::MAX;

/// `poll_oneoff(in, out, n, nevents)`: the subscriptions are rewritten in place for wasmer
/// and restored afterwards (the guest is inside this call):
/// - a descriptor becomes wasmer's number (see `descriptors`);
/// - a clock with timeout 0 must fire at once (a zero-length sleep, or an absolute time
///   already past), but wasmer's `poll_oneoff_internal` reads 0 as "no timeout" and blocks
///   forever; wasmer reads 1 as "fire now", so it is handed 1 ns.
pub(super) fn poll_translated(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (input, count) = (u64::from(i32_arg(args, 0)?), u64::from(i32_arg(args, 2)?));
    let Some(memory) = call.memory()? else {
        return call.original("poll_oneoff", args);
    };
    // (address, what the guest had there, its width in bytes)
    let mut saved: Vec<(u64, u64, usize)> = Vec::new();
    {
        let table = call.descriptors()?;
        let view = call.view(&memory);
        for i in 0..count {
            let sub = input + i * SUBSCRIPTION_SIZE;
            match read_u8(&view, sub + SUBSCRIPTION_TAG)? {
                EVENTTYPE_CLOCK => {
                    let at = sub + SUBSCRIPTION_CLOCK_TIMEOUT;
                    if read_u64(&view, at)? == 0 {
                        view.write(at, &1u64.to_le_bytes()).map_err(memory_error)?;
                        saved.push((at, 0, 8));
                    }
                }
                EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                    let at = sub + SUBSCRIPTION_FD;
                    let fd = read_u32(&view, at)?;
                    let wasmer_fd = table.resolve(fd).unwrap_or(NO_DESCRIPTOR);
                    if wasmer_fd != fd {
                        view.write(at, &wasmer_fd.to_le_bytes())
                            .map_err(memory_error)?;
                        saved.push((at, u64::from(fd), 4));
                    }
                }
                _ => {}
            }
        }
    }
    let results = call.original("poll_oneoff", args);
    let view = call.view(&memory);
    for (at, value, width) in saved {
        view.write(at, &value.to_le_bytes()[..width])
            .map_err(memory_error)?;
    }
    results
}
