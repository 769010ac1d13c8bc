//! Caps a guest's linear memory below its container's memory limit, so that a module that
//! keeps allocating sees `memory.grow` fail (and can report it) before the kernel's OOM
//! killer ends the whole process.
//!
//! wasmer's `BaseTunables` makes every memory `Static` whatever its type, so the compiled code
//! does not depend on the cap: artifacts stay valid across limits and the cache key needs no
//! limit. Only the maximum given to each new memory is lowered.

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

/// `BaseTunables` with every memory's maximum lowered to `max`.
pub struct MemoryCap {
    base: BaseTunables,
    max: Pages,
}

impl MemoryCap {
    pub fn new(max: Pages) -> MemoryCap {
        MemoryCap {
            base: BaseTunables::new(),
            max,
        }
    }

    fn capped(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.max {
            return Err(MemoryError::Generic(format!(
                "the module needs {} MiB of linear memory at start, more than the {} MiB its container's memory limit leaves",
                mib(ty.minimum),
                mib(self.max)
            )));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(self.max, |m| m.min(self.max)));
        Ok(capped)
    }
}

impl Tunables for MemoryCap {
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
        self.base.create_host_memory(&self.capped(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let capped = self.capped(ty)?;
        // SAFETY: the caller's guarantee about `vm_definition_location` is passed on as is.
        unsafe {
            self.base
                .create_vm_memory(&capped, style, vm_definition_location)
        }
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

    #[test]
    fn the_cap_leaves_room_for_the_engine() {
        // 96 MiB limit: 64 MiB of linear memory (1024 pages).
        assert_eq!(pages_for_limit(96 << 20), Pages(1024));
        // 32 MiB limit: half of it.
        assert_eq!(pages_for_limit(32 << 20), Pages(256));
        let cap = MemoryCap::new(Pages(256));
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
