//! How the guest's engine makes linear memories (wasmer's `Tunables`):
//!
//! - Capped below its container's memory limit, so that a module that keeps allocating sees
//!   `memory.grow` fail (and can report it) before the kernel's OOM killer ends the whole
//!   process. wasmer's `BaseTunables` makes every memory `Static` whatever its type, so the
//!   compiled code does not depend on the cap: artifacts stay valid across limits and the
//!   cache key needs no limit. Only the maximum given to each new memory is lowered.
//! - A memory that starts large (an interpreter's heap: CPython's is 10 MiB) is advised as
//!   huge pages. The kernel (transparent huge pages `madvise`, Debian's default) then faults
//!   it in 2 MiB at a time, not 4 KiB; a small memory, which a module fills as it needs,
//!   stays in small pages so that an idle guest costs no more.

use std::ptr::NonNull;

use wasmer::sys::vm::{
    MemoryError, MemoryStyle, TableStyle, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition,
};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryType, Pages, TableType, WASM_PAGE_SIZE};

/// What is kept back from the memory limit for the engine itself (its code, the compiled
/// module, buffers): 32 MiB, or half of a limit below 64 MiB.
const ENGINE_RESERVE: u64 = 32 << 20;

/// The largest linear memory a guest may have under a cgroup memory limit of `limit` bytes.
pub fn pages_for_limit(limit: u64) -> Pages {
    let reserve = ENGINE_RESERVE.min(limit / 2);
    let pages = (limit - reserve) / WASM_PAGE_SIZE as u64;
    Pages(u32::try_from(pages).unwrap_or(u32::MAX).max(1))
}

fn mib(pages: Pages) -> u64 {
    (u64::from(pages.0) * WASM_PAGE_SIZE as u64) >> 20
}

/// A linear memory whose initial size is at least this is advised as huge pages.
const LARGE_MEMORY: Pages = Pages(128); // 8 MiB

/// `BaseTunables` with every memory's maximum lowered to `max`, if given, and large memories
/// advised as huge pages.
pub struct GuestTunables {
    base: BaseTunables,
    max: Option<Pages>,
}

impl GuestTunables {
    pub fn new(max: Option<Pages>) -> GuestTunables {
        GuestTunables {
            base: BaseTunables::new(),
            max,
        }
    }

    fn capped(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        let Some(max) = self.max else {
            return Ok(*ty);
        };
        if ty.minimum > max {
            return Err(MemoryError::Generic(format!(
                "the module needs {} MiB of linear memory at start, more than the {} MiB its container's memory limit leaves",
                mib(ty.minimum),
                mib(max)
            )));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(max, |m| m.min(max)));
        Ok(capped)
    }
}

/// Advises the whole reservation of a memory that starts at `LARGE_MEMORY` or more as huge
/// pages (the part not yet accessible too: the advice stays with it as it grows). Best
/// effort: a refusal leaves small pages.
fn advise_huge_pages(memory: &VMMemory, ty: &MemoryType, style: &MemoryStyle) {
    if !matches!(style, MemoryStyle::Static) || ty.minimum < LARGE_MEMORY {
        return;
    }
    // A static memory reserves the whole wasm32 address space (and a guard after it).
    let bound = MemoryStyle::static_bound();
    let definition = memory.0.vmmemory();
    // SAFETY: wasmer's definition of a memory it has just made; its base starts a reservation
    // of at least `bound` bytes, and advice changes none of its contents.
    unsafe {
        let base = definition.as_ref().base;
        libc::madvise(base.cast(), bound.bytes().0, libc::MADV_HUGEPAGE);
    }
}

impl Tunables for GuestTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        let memory = self.base.create_host_memory(&self.capped(ty)?, style)?;
        advise_huge_pages(&memory, ty, style);
        Ok(memory)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let capped = self.capped(ty)?;
        // SAFETY: the caller's guarantee about `vm_definition_location` is passed on as is.
        let memory = unsafe {
            self.base
                .create_vm_memory(&capped, style, vm_definition_location)?
        };
        advise_huge_pages(&memory, ty, style);
        Ok(memory)
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: the caller's guarantee about `vm_definition_location` is passed on as is.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the kernel's flags of the mapping holding `addr` say huge pages were advised.
    fn advised(addr: usize) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut holds = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((start, end)) = range.split_once('-') {
                    if let (Ok(start), Ok(end)) = (
                        usize::from_str_radix(start, 16),
                        usize::from_str_radix(end, 16),
                    ) {
                        holds = (start..end).contains(&addr);
                        continue;
                    }
                }
            }
            if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| holds) {
                return flags.split_whitespace().any(|f| f == "hg");
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_memory_that_starts_large_is_advised_as_huge_pages_and_a_small_one_is_not() {
        let tunables = GuestTunables::new(None);
        let base = |pages: u32| {
            let ty = MemoryType::new(Pages(pages), None, false);
            let memory = tunables
                .create_host_memory(&ty, &tunables.memory_style(&ty))
                .unwrap();
            // SAFETY: the definition of the memory just made, read while it lives.
            let base = unsafe { memory.0.vmmemory().as_ref().base } as usize;
            (memory, base)
        };
        let (_large, at) = base(LARGE_MEMORY.0);
        assert!(advised(at), "an 8 MiB memory");
        let (_small, at) = base(17);
        assert!(!advised(at), "a 1 MiB memory (a Rust program's)");
    }

    #[test]
    fn the_cap_leaves_room_for_the_engine() {
        // 96 MiB limit: 64 MiB of linear memory (1024 pages).
        assert_eq!(pages_for_limit(96 << 20), Pages(1024));
        // 32 MiB limit: half of it.
        assert_eq!(pages_for_limit(32 << 20), Pages(256));
        let cap = GuestTunables::new(Some(Pages(256)));
        let unbounded = MemoryType::new(Pages(1), None, false);
        assert_eq!(cap.capped(&unbounded).unwrap().maximum, Some(Pages(256)));
        let smaller = MemoryType::new(Pages(1), Some(Pages(10)), false);
        assert_eq!(cap.capped(&smaller).unwrap().maximum, Some(Pages(10)));
        let too_big = MemoryType::new(Pages(300), None, false);
        assert!(cap
            .capped(&too_big)
            .unwrap_err()
            .to_string()
            .contains("memory limit"));
    }
}
