fn main() {
    std::process::exit(cutover_cli::main());
}
