fn main() -> std::process::ExitCode {
    gdflow::cli::main()
}
