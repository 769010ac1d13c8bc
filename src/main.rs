//! `containerd-shim-wasm-v1`: flags and dispatch only.

use containerd_shim_wasm::engine::wasmer::WASMER_VERSION;
use containerd_shim_wasm::guest::{child, GUEST_MODE_ARG};
use containerd_shim_wasm::shim::{self, WasmShim, RUNTIME_NAME};

mod huge_pages;

fn main() {
    let arg1 = std::env::args_os().nth(1);
    match arg1.as_ref().and_then(|a| a.to_str()) {
        Some(GUEST_MODE_ARG) => {
            huge_pages::advise_for_guest();
            child::main()
        }
        Some("-v") | Some("--version") | Some("-version") => {
            println!(
                "containerd-shim-wasm-v1 {} (runtime {RUNTIME_NAME}, wasmer {WASMER_VERSION}, task API v2)",
                env!("CARGO_PKG_VERSION")
            );
        }
        _ => run_action(),
    }
}

/// What containerd runs the binary for: `start` and a `delete` after the shim's own clean-up
/// here, synchronously (they run once per container, do one thing and exit); the server, and
/// a `delete` after a lost shim, through the crate.
fn run_action() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let Ok(flags) = containerd_shim::parse(&args) else {
        // The crate parses them again and reports what is wrong.
        return run_shim(false);
    };
    if flags.action == "start" {
        let bundle = shim::bundle_of(&flags);
        let started = shim::start(
            &flags.namespace,
            &flags.id,
            &flags.address,
            flags.debug,
            &bundle,
        );
        match started {
            Ok(address) => write_answer(address.as_bytes()),
            Err(e) => fail(&format!("{e:?}")),
        }
    } else if let Some(response) = shim::answer_delete_after_clean_up(&flags) {
        write_answer(&response)
    } else {
        run_shim(flags.action == "delete")
    }
}

/// An action's answer on stdout, where containerd reads it.
fn write_answer(answer: &[u8]) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(answer).and_then(|()| stdout.flush()) {
        fail(&format!("write the answer on stdout: {e}"));
    }
}

/// Ends a failed action as the crate does: the reason on stderr (containerd shows it), exit 1.
fn fail(why: &str) -> ! {
    eprintln!("{RUNTIME_NAME}: {why}");
    std::process::exit(1)
}

/// The server, or a `delete` action (`is_delete`) after a lost shim, through the crate.
fn run_shim(is_delete: bool) {
    one_malloc_arena();
    let runtime = if is_delete {
        // It does one thing and exits: no workers.
        tokio::runtime::Builder::new_current_thread()
    } else {
        // The server: two workers whatever the host, as it waits on I/O and its blocking work
        // goes to tokio's blocking pool. Left to itself tokio would start one worker per core
        // (64 on a big node, per shim) and, to count them, read this process's cgroup and
        // mount table.
        let mut server = tokio::runtime::Builder::new_multi_thread();
        server.worker_threads(2);
        server
    }
    .enable_all()
    .build()
    .expect("build the shim's tokio runtime");
    // The shim installs its own logger (logger.rs): one write per line, shared with guests.
    let config = containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    };
    runtime.block_on(containerd_shim::asynchronous::run::<WasmShim>(
        RUNTIME_NAME,
        Some(config),
    ));
}

/// One malloc arena for all of the shim's threads. glibc gives each thread that allocates an
/// arena of its own, each with partly used pages; the shim's threads allocate little and
/// rarely at the same time, so the arenas cost memory (about 100 KiB per shim) and buy
/// nothing. Not in a guest: its compile allocates from several threads at once, and one
/// arena made a large module's cold start a quarter slower (make bench: 3.9 s against 3.1).
fn one_malloc_arena() {
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it is called before any other
    // thread exists, and an unknown or refused setting leaves the allocator as it was.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
