fn main() -> std::process::ExitCode {
    dbos_services::cli::main()
}
