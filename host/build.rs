//! Build script of the host (the tests crate runs it too, for the same linking): links against
//! libtorch from the repo-local venv without any environment exports — an rpath to torch's lib
//! directory, and libtorch_cuda kept as NEEDED (when the wheel has it) so the same binary trains
//! on CUDA wherever a GPU is present.
use std::env;
use std::path::Path;

fn main() {
    link_libtorch();
    // `file!()` is this script relative to the package using it (the tests crate shares it).
    println!("cargo:rerun-if-changed={}", file!());
}

fn link_libtorch() {
    let lib = env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
