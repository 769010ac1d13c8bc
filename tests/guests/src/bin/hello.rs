// The smallest useful guest: a test compares its whole stdout with "hello from wasm\n".
fn main() {
    println!("hello from wasm");
}
