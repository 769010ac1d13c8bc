// probe: a multi-tool guest that lets the shim's tests observe what a WASI module sees
// (arguments, environment, filesystem, stdio, exit codes, traps, blocking and spinning), and
// gives the benchmark a CPU-bound workload (`sieve N`).
//
// `probe SUBCOMMAND [ARGS...]`. Output is one item per line and nothing else, so tests
// can compare it exactly. Every failure prints `error: <ErrorKind> <error>` on stderr and
// exits 1: the ErrorKind name (NotFound, ReadOnlyFilesystem, PermissionDenied...) is what
// tests assert on. Usage errors print `usage: ...` on stderr and exit 2.

use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::process::exit;

fn main() {
    // Collected lossily so that odd argv bytes are reported rather than panicking here.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let rest: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");

    let result = match (cmd, rest.as_slice()) {
        // Any further arguments are printed too: that is what tests pass to observe argv.
        ("args", _) => print_lines(args.iter().cloned()),
        ("env", []) => print_lines(
            std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())),
        ),
        ("exit", [n]) => exit(parse(n)),
        ("cat", []) => cat(),
        ("read", [path]) => fs::read(path).and_then(|data| print_bytes(&data)),
        // At most N bytes, in hex on one line: for devices that never end, like /dev/zero.
        ("head", [path, n]) => head(path, parse(n)),
        ("write", [path, text]) => fs::write(path, text),
        // Creates the file if it is missing, like a shell's `>>`.
        ("append", [path, text]) => fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes())),
        ("ls", [path]) => ls(path),
        ("pwd", []) => std::env::current_dir().map(|d| println!("{}", d.display())),
        // Not create_dir_all: tests want to see AlreadyExists and missing parents.
        ("mkdir", [path]) => fs::create_dir(path),
        ("rm", [path]) => rm(path),
        ("link", [existing, new]) => fs::hard_link(existing, new),
        ("symlink", [target, path]) => symlink(target, path),
        ("set-mtime", [path, secs]) => fs::File::open(path).and_then(|f| {
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(parse(secs)))
        }),
        ("stat", [path]) => stat(path),
        // isatty(N) of stdio stream N (0, 1 or 2), as 1 or 0.
        ("isatty", [n]) => isatty(parse(n)),
        ("stdout-lines", [n]) => stdout_lines(parse(n)),
        ("stderr", [text]) => {
            eprintln!("{text}");
            Ok(())
        }
        ("sleep", [secs]) => {
            say("sleeping");
            // Blocks inside the WASI poll_oneoff call, not in guest code.
            std::thread::sleep(std::time::Duration::from_secs_f64(parse(secs)));
            Ok(())
        }
        ("spin", []) => spin(),
        ("sieve", [n]) => sieve(parse(n)),
        ("read-stdin-line", []) => {
            let mut line = String::new();
            io::stdin().lock().read_line(&mut line).map(|_| {
                println!("got: {}", line.trim_end_matches(['\n', '\r']));
            })
        }
        ("alloc-forever", []) => alloc_forever(),
        ("panic", []) => panic!("probe panic"),
        _ => usage(),
    };

    if let Err(e) = result {
        // Flush first so that what was printed before the error is not lost or reordered.
        let _ = io::stdout().flush();
        eprintln!("error: {:?} {}", e.kind(), e);
        exit(1);
    }
    // Surface a failed final flush (e.g. a closed stdout) as an error instead of ignoring it.
    if let Err(e) = io::stdout().flush() {
        eprintln!("error: {:?} {}", e.kind(), e);
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: probe args | env | exit N | cat | read PATH | write PATH TEXT | \
         head PATH N | isatty N | append PATH TEXT | ls PATH | pwd | mkdir PATH | rm PATH | stat PATH | \
         link EXISTING NEW | symlink TARGET PATH | set-mtime PATH SECS | stdout-lines N | stderr TEXT | sleep SECS | spin | sieve N | read-stdin-line | \
         alloc-forever | panic"
    );
    exit(2);
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

/// Prints a line and flushes it at once, so a test waiting for it knows the guest got there.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One item per line, written and flushed as one block.
fn print_lines(lines: impl IntoIterator<Item = String>) -> io::Result<()> {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    print_bytes(out.as_bytes())
}

fn print_bytes(data: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(data)?;
    out.flush()
}

fn isatty(stream: u32) -> io::Result<()> {
    use std::io::IsTerminal;
    let terminal = match stream {
        0 => io::stdin().is_terminal(),
        1 => io::stdout().is_terminal(),
        2 => io::stderr().is_terminal(),
        _ => usage(),
    };
    print_lines([u8::from(terminal).to_string()])
}

fn head(path: &str, n: u64) -> io::Result<()> {
    let mut data = Vec::new();
    fs::File::open(path)?.take(n).read_to_end(&mut data)?;
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    print_lines([hex])
}

fn cat() -> io::Result<()> {
    // Echo each chunk as it arrives (not at EOF) so tests can interact with a running guest.
    let mut stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    eprintln!("EOF");
    Ok(())
}

fn ls(path: &str) -> io::Result<()> {
    let mut names = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    print_lines(names)
}

fn rm(path: &str) -> io::Result<()> {
    // symlink_metadata so a symlink to a directory is removed as a link, not followed.
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}

/// Creates the symlink `path` -> `target` (the text as given). std's `symlink_path` is
/// unstable on WASI, so this is WASI's `path_symlink` under the link's directory, opened as
/// std opens a directory (with its path rights).
fn symlink(target: &str, path: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::path::Path;

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn path_symlink(old: *const u8, old_len: usize, fd: i32, new: *const u8, new_len: usize)
            -> u16;
    }
    let path = Path::new(path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
        .as_encoded_bytes();
    let dir = fs::File::open(dir)?;
    // SAFETY: both buffers outlive the call, which only reads them.
    let errno = unsafe {
        path_symlink(
            target.as_ptr(),
            target.len(),
            dir.as_raw_fd(),
            name.as_ptr(),
            name.len(),
        )
    };
    match errno {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(i32::from(e))),
    }
}

/// Prints `<file|dir|symlink|other> <size in bytes>` on one line; symlinks are not followed.
fn stat(path: &str) -> io::Result<()> {
    let m = fs::symlink_metadata(path)?;
    let t = m.file_type();
    let kind = if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    };
    println!("{kind} {}", m.len());
    Ok(())
}

/// Writes `line 1`..`line N` with big buffered writes and exits straight away: tests check
/// that output written just before proc_exit reaches the container's log.
fn stdout_lines(n: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    for i in 1..=n {
        writeln!(out, "line {i}")?;
    }
    out.flush()?;
    drop(out);
    exit(0)
}

/// Computes forever without a single syscall, so only the shim's own means (an epoch or
/// signal interrupt, or killing the process) can stop it.
fn spin() -> io::Result<()> {
    say("spinning");
    let mut x: u64 = 1;
    loop {
        // black_box keeps the optimiser from proving the loop useless and removing it.
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// The numbers the sieve of `sieve N` covers in its first round: a 1 MiB table, which stays in
/// the CPU's caches, so the figure measures generated code rather than memory.
const SIEVE_LIMIT: usize = 1 << 20;

/// CPU-bound work for the benchmark (benches/side_by_side.rs): N rounds of a sieve of
/// Eratosthenes, timed by the guest itself on the monotonic clock so that only the compute is
/// measured, not the start. Prints two lines: a checksum of the prime counts (the same for
/// every runtime, so a wrong result shows) and the elapsed nanoseconds.
fn sieve(rounds: u64) -> io::Result<()> {
    let started = std::time::Instant::now();
    let mut flags = vec![0u8; SIEVE_LIMIT];
    let mut checksum: u64 = 0;
    for round in 0..rounds {
        // A different limit each round, so no round's count can be reused for the next.
        let limit = SIEVE_LIMIT - (round % 256) as usize;
        let primes = count_primes(std::hint::black_box(&mut flags[..limit]));
        checksum = checksum.wrapping_mul(31).wrapping_add(primes);
    }
    let elapsed = started.elapsed().as_nanos();
    print_lines([checksum.to_string(), elapsed.to_string()])
}

/// The number of primes below `flags.len()`; `flags` is the sieve's scratch table.
fn count_primes(flags: &mut [u8]) -> u64 {
    let n = flags.len();
    flags.fill(1);
    flags[..2.min(n)].fill(0);
    let mut i = 2;
    while i * i < n {
        if flags[i] == 1 {
            let mut multiple = i * i;
            while multiple < n {
                flags[multiple] = 0;
                multiple += i;
            }
        }
        i += 1;
    }
    flags.iter().filter(|&&f| f == 1).count() as u64
}

/// Allocates and touches 1 MiB blocks until memory runs out. try_reserve turns the failed
/// memory.grow into an observable result instead of an abort.
fn alloc_forever() -> io::Result<()> {
    const MIB: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mib = blocks.len();
        let mut block = Vec::new();
        if block.try_reserve_exact(MIB).is_err() || blocks.try_reserve(1).is_err() {
            println!("allocation failed at {mib} MiB");
            let _ = io::stdout().flush();
            exit(12);
        }
        // Touch every byte so the memory is really used, not just reserved.
        block.resize(MIB, 0xA5);
        blocks.push(std::hint::black_box(block));
        if blocks.len().is_multiple_of(64) {
            println!("{} MiB", blocks.len());
        }
    }
}
