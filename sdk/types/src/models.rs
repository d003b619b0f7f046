//! The OpenAI model list returned by `GET {base}/models`.

use serde::{Deserialize, Serialize};

/// `{"object":"list","data":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelEntry>,
}

/// One model a proxy offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub created: u64,
    pub owned_by: String,
}
