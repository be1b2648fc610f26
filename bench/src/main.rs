fn main() -> std::process::ExitCode {
    dbos_bench::main_from(std::env::args().skip(1))
}
