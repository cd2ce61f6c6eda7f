//! Generate the gRPC code from the committed .proto at build time (so it never drifts).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // A vendored protoc: nothing to install. SAFETY of set_var: build scripts are single-threaded.
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out.join("tessera_descriptor.bin")).compile_protos(
        &["../../proto/tessera/v1/factor.proto", "../../proto/tessera/v1/identity.proto"],
        &["../../proto"],
    )?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
