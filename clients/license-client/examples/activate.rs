//! Activates this machine, stores the activation file, verifies it offline
//! and prints its features.
//!
//! ```sh
//! cargo run -p license-client --example activate -- \
//!     http://localhost:8082 my-product XXXX-XXXX-… ./license [name=value …]
//! ```
//!
//! Arguments fall back to `LICENSING_ACTIVATION_URL`, `LICENSE_PRODUCT`,
//! `LICENSE_KEY` and `LICENSE_DIR`; components given as `name=value` replace the defaults
//! (`/etc/machine-id`, the host name, the OS and architecture).

use license_client::{Client, Components, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut arg = |env: &str| args.next().or_else(|| std::env::var(env).ok());
    let url = arg("LICENSING_ACTIVATION_URL").ok_or("activation URL missing")?;
    // The product code: a file of another product does not verify.
    let product = arg("LICENSE_PRODUCT").ok_or("product missing")?;
    let key = arg("LICENSE_KEY").ok_or("license key missing")?;
    let dir = arg("LICENSE_DIR").unwrap_or_else(|| "license".into());
    let given: Components = std::env::args()
        .skip(5)
        .filter_map(|a| a.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    let device = if given.is_empty() {
        default_device()
    } else {
        given
    };

    let mut client = Client::new(&url, &url, &product, &key)?.with_store(Store::open(&dir)?)?;
    if client.activation_keys().is_none() {
        // Trust on first use; a product would rather ship the JWKS.
        let keys = client.fetch_activation_keys().await?;
        client.pin_activation_keys(keys)?;
    }
    let now = chrono::Utc::now();
    let activation = client.activate(&device, now).await?;
    let verified = client.load_activation(&device, now)?;
    assert_eq!(verified, activation);
    println!(
        "activation {} of license {}",
        verified.activation_id(),
        verified.license_id()
    );
    for f in verified.features() {
        let until = f.expires_at.map_or("perpetual".into(), |t| t.to_rfc3339());
        let may = if verified.may_start(&f.code, now) {
            "usable"
        } else {
            "expired"
        };
        println!("  {} ({until}): {may}", f.code);
    }
    Ok(())
}

fn default_device() -> Components {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let mut d = Components::new();
    d.insert(
        "machine_id".into(),
        read("/etc/machine-id").unwrap_or_else(|| "unknown".into()),
    );
    d.insert(
        "host".into(),
        read("/etc/hostname").unwrap_or_else(|| "unknown".into()),
    );
    d.insert(
        "os".into(),
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    );
    d
}
