//! A WASI command for pods. Its arguments say what to do, one step after another:
//!
//! - `echo WORDS...`  print the words
//! - `warn WORDS...`  print the words on stderr
//! - `stdin`          copy stdin to stdout until it ends
//! - `env NAME`       print NAME's value
//! - `cat PATH`       print a file
//! - `write PATH TEXT` write a file
//! - `ls DIR`         print a directory's entries, sorted
//! - `count N MS`     print 1..N, one every MS milliseconds
//! - `sleep MS`       sleep
//! - `spin MS`        keep a CPU busy for MS milliseconds of wall time
//! - `alloc MIB`      allocate and touch MIB mebibytes (to meet a memory limit)
//! - `trap`           abort (a trap)
//! - `exit N`         exit with code N
//!
//! Without arguments it says hello and exits 0.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        println!("hello from a WASI command");
        return;
    }
    let mut words = args.iter();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    while let Some(step) = words.next() {
        let mut next = || words.next().cloned().unwrap_or_default();
        match step.as_str() {
            "echo" => {
                let rest: Vec<String> = std::iter::from_fn(|| words.next().cloned()).collect();
                println!("{}", rest.join(" "));
            }
            "warn" => {
                let rest: Vec<String> = std::iter::from_fn(|| words.next().cloned()).collect();
                eprintln!("{}", rest.join(" "));
            }
            "stdin" => {
                let mut input = std::io::stdin().lock();
                let mut buffer = [0u8; 4096];
                loop {
                    match std::io::Read::read(&mut input, &mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(&buffer[..n]);
                            let _ = out.flush();
                        }
                    }
                }
            }
            "spin" => {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(next().parse().unwrap_or(1000));
                let mut x = 0u64;
                while std::time::Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                println!("spun {}", x % 2);
            }
            "env" => {
                let name = next();
                println!("{name}={}", std::env::var(&name).unwrap_or_default());
            }
            "cat" => {
                let path = next();
                match std::fs::read_to_string(&path) {
                    Ok(text) => println!("{text}"),
                    Err(e) => println!("cat {path}: {e}"),
                }
            }
            "write" => {
                let (path, text) = (next(), next());
                if let Err(e) = std::fs::write(&path, text) {
                    println!("write {path}: {e}");
                }
            }
            "ls" => {
                let dir = next();
                let mut names: Vec<String> = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
                    Err(e) => vec![format!("ls {dir}: {e}")],
                };
                names.sort();
                println!("{}", names.join(" "));
            }
            "count" => {
                let n: u64 = next().parse().unwrap_or(3);
                let ms: u64 = next().parse().unwrap_or(100);
                for i in 1..=n {
                    println!("{i}");
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
            }
            "sleep" => std::thread::sleep(std::time::Duration::from_millis(next().parse().unwrap_or(1000))),
            "alloc" => {
                let mib: usize = next().parse().unwrap_or(1);
                for _ in 0..mib {
                    kept.push(vec![1u8; 1 << 20]);
                }
                println!("allocated {mib} MiB");
            }
            "trap" => std::process::abort(),
            "exit" => {
                let _ = std::io::stdout().flush();
                // WASI 0.2's exit is success or failure; exit-with-code carries the code.
                wasip2::cli::exit::exit_with_code(next().parse().unwrap_or(1));
                return;
            }
            other => {
                eprintln!("unknown step {other:?}");
                wasip2::cli::exit::exit_with_code(2);
            }
        }
    }
}
