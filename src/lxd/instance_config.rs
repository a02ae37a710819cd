//! One key of an instance's config, set in place (`PATCH /1.0/instances/<name>`, which
//! merges the keys it is given and leaves the rest as they are).

use super::cli::{url_segment, LxcCli, QueryAnswer};
use super::LxdError;

impl LxcCli {
    pub(super) fn patch_instance_config(
        &self,
        instance: &str,
        key: &str,
        value: &str,
    ) -> Result<(), LxdError> {
        let body = serde_json::json!({ "config": { key: value } });
        let path = format!("/1.0/instances/{}", url_segment(instance));
        match self.query(
            &format!("config set {instance}"),
            "PATCH",
            &path,
            Some(&body),
        )? {
            QueryAnswer::Found(_) => Ok(()),
            QueryAnswer::NotFound(_) => Err(LxdError::InstanceNotFound(instance.to_string())),
        }
    }
}
