//! The fix to `poll_oneoff`: clock subscriptions with a zero timeout fire at once.

use wasmer::{RuntimeError, Value};

use super::memory::{memory_error, read_u64, read_u8};
use super::{i32_arg, Call};

/// WASI's `subscription`: 48 bytes, the tag (0 = clock) at 8, the clock's timeout at 24.
const SUBSCRIPTION_SIZE: u64 = 48;
const SUBSCRIPTION_TAG: u64 = 8;
const SUBSCRIPTION_CLOCK_TIMEOUT: u64 = 24;
const EVENTTYPE_CLOCK: u8 = 0;

/// `poll_oneoff(in, out, n, nevents)`: a clock subscription with timeout 0 must fire at once
/// (a zero-length sleep, or an absolute time already past), but wasmer's `poll_oneoff_internal`
/// reads 0 as "no timeout" and blocks forever. wasmer reads 1 as "fire now", so zero timeouts
/// are handed to it as 1 ns and the guest's subscriptions restored afterwards.
pub(super) fn poll_zero_timeouts_fire(
    call: &mut Call<'_>,
    args: &[Value],
) -> Result<Vec<Value>, RuntimeError> {
    let (input, count) = (u64::from(i32_arg(args, 0)?), u64::from(i32_arg(args, 2)?));
    let Some(memory) = call.memory()? else {
        return call.original("poll_oneoff", args);
    };
    let mut zeroed = Vec::new();
    {
        let view = call.view(&memory);
        for i in 0..count {
            let sub = input + i * SUBSCRIPTION_SIZE;
            let timeout_at = sub + SUBSCRIPTION_CLOCK_TIMEOUT;
            if read_u8(&view, sub + SUBSCRIPTION_TAG)? == EVENTTYPE_CLOCK
                && read_u64(&view, timeout_at)? == 0
            {
                view.write(timeout_at, &1u64.to_le_bytes())
                    .map_err(memory_error)?;
                zeroed.push(timeout_at);
            }
        }
    }
    let results = call.original("poll_oneoff", args);
    let view = call.view(&memory);
    for at in zeroed {
        view.write(at, &0u64.to_le_bytes()).map_err(memory_error)?;
    }
    results
}
