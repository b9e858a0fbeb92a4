//! The `tokenproxy` binary: parse the command line and hand over to the library.

// pingora allocates several buffers per request; mimalloc measured about 10% more requests/s
// than glibc's allocator in bench/run.sh.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tokenproxy::cli::main()
}
