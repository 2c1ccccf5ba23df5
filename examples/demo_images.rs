//! Writes a small min image and a small full image (a Triton-shaped layout
//! with fake components) as OCI layouts, for trying triton-compose without
//! downloading anything: `cargo run --example demo_images -- DIR`.
//!
//! The images are the ones the integration tests use.

#[path = "../tests/support/images.rs"]
mod support;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "demo".into()));
    let min = support::min_image();
    let full = support::full_image(&min);
    for name in ["min", "full"] {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path).expect("remove the old demo image");
        }
    }
    min.write_oci(&dir.join("min"), "latest");
    full.write_oci(&dir.join("full"), "24.10");
    println!(
        "wrote oci:{0}/min:latest and oci:{0}/full:24.10",
        dir.display()
    );
}
