//! The official OpenAI Python SDK, pinned in `tests/sdk/requirements.txt`, installed once
//! from PyPI into its own virtualenv under `target/`, for tests that drive the gateway
//! with a real client.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Serialises the first install between tests of one binary.
static INSTALL: Mutex<()> = Mutex::new(());

/// Creates (once) `target/openai-sdk-venv` with the pinned SDK; returns its python.
/// Blocking: call it through `spawn_blocking`.
pub fn python() -> PathBuf {
    let _once = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/openai-sdk-venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/sdk/requirements.txt");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let python3 = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python3)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m venv failed");
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install of the OpenAI SDK failed");
    std::fs::write(&stamp, wanted).unwrap();
    python
}

/// Runs `tests/sdk/<script>` against `base_url` (…/v1) with `key`; returns the JSON it
/// printed, or panics with its stderr.
pub async fn run(script: &str, base_url: &str, key: &str) -> serde_json::Value {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sdk")
        .join(script);
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("TOLLGATE_BASE_URL", base_url)
        .env("TOLLGATE_KEY", key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
