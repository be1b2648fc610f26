//! The `dbos` binary: the command line of `dbos_services::cli`, and `dbos bench`.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("bench") {
        return dbos_bench::main_from(args);
    }
    dbos_services::cli::main()
}
