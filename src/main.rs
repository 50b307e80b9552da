//! The `weft` command: `serve`, `demo`.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
