//! The `vouch` binary: everything is in the library; this only runs the command line.

fn main() {
    std::process::exit(vouch::main());
}
