//! Tells the NIF whether RocksDB is compiled for SSE4.2 (see `.cargo/config.toml`): the NIF
//! then checks, when it loads, that the CPU has it (see `load` in `lib.rs`).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    // The variables the `cc` crate reads C++ flags from, for this target.
    let vars = [
        "CXXFLAGS".to_string(),
        "TARGET_CXXFLAGS".to_string(),
        format!("CXXFLAGS_{target}"),
        format!("CXXFLAGS_{}", target.replace('-', "_")),
    ];
    println!("cargo::rustc-check-cfg=cfg(rocksdb_sse42)");
    let mut sse42 = false;
    for v in &vars {
        println!("cargo::rerun-if-env-changed={v}");
        sse42 |= std::env::var(v).is_ok_and(|f| f.contains("-msse4.2"));
    }
    if sse42 {
        println!("cargo::rustc-cfg=rocksdb_sse42");
    }
}
