//! The official OpenAI Python SDK (from PyPI, in its own virtualenv under `target/`)
//! completes streaming and non-streaming `responses.create` through the gateway and sees
//! the gateway's errors as proper `openai` exceptions with status and code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tollgate_tests::fixture::Gateway;

/// Creates (once) `target/openai-sdk-venv` with the pinned SDK; returns its python.
fn sdk_python() -> PathBuf {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_talks_to_the_gateway() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/check_openai_sdk.py");
    let base_url = format!("{}/v1", gw.dp(0).proxy_url());
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("TOLLGATE_BASE_URL", base_url)
        .env("TOLLGATE_KEY", &b.key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(v["non_stream"]["status"], "completed");
    assert_eq!(v["non_stream"]["model"], "gpt-5.1");
    assert!(
        v["non_stream"]["output_text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    assert!(v["non_stream"]["input_tokens"].as_i64().unwrap() > 0);

    let types: Vec<&str> = v["stream"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert!(types.contains(&"response.output_text.delta"));
    assert_eq!(v["stream"]["output_text"], v["non_stream"]["output_text"]);

    assert_eq!(v["invalid_key"]["class"], "AuthenticationError");
    assert_eq!(v["invalid_key"]["status"], 401);
    assert_eq!(v["invalid_key"]["code"], "INVALID_API_KEY");
    assert_eq!(v["missing_model"]["class"], "BadRequestError");
    assert_eq!(v["missing_model"]["status"], 400);
    assert_eq!(v["missing_model"]["message"], "model is required");
    assert!(
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "gpt-5.1"),
        "{v}"
    );
}
