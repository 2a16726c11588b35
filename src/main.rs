fn main() {
    dmpd::report::phases::start();
    let code = dmpd::commands::main_with_args(std::env::args_os().collect());
    std::process::exit(code);
}
