//! A WebAssembly component of the wrong world (a WASI command), for the host's tests.

fn main() {
    println!("I am a command, not an admission plugin");
}
