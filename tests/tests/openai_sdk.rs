//! The official OpenAI Python SDK (from PyPI, in its own virtualenv under `target/`)
//! completes streaming and non-streaming `responses.create` through the gateway and sees
//! the gateway's errors as proper `openai` exceptions with status and code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate_tests::fixture::Gateway;
use tollgate_tests::sdk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_talks_to_the_gateway() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let base_url = format!("{}/v1", gw.dp(0).proxy_url());
    let v = sdk::run("check_openai_sdk.py", &base_url, &b.key).await;

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
