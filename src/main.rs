//! The `weft` command: `serve`, `demo`, `load`, `hist`.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
