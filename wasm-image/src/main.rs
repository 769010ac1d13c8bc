//! The `wasm-image` command: everything is in the library; this only turns the outcome into
//! a message and an exit status.

use std::process;

use wasm_image::Error;

fn main() {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect();
    let result = match args {
        Ok(args) => wasm_image::run(&args),
        Err(arg) => Err(Error::Usage(format!("argument {arg:?} is not valid UTF-8"))),
    };
    if let Err(err) = result {
        eprintln!("wasm-image: {err}");
        process::exit(err.exit_code());
    }
}
