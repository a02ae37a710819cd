//! What a test reads from the workers' claim files (`claims/job-<id>`: `slot=N message=D
//! runner=R`): which worker held a job last and which runner it spawned for it.

use std::collections::BTreeMap;
use std::path::Path;

/// The claim file of a job: (slot, runner) of its last holder, live or dead.
pub fn claim_of(claims: &Path, job: u64) -> Option<(u32, Option<String>)> {
    let text = std::fs::read_to_string(claims.join(format!("job-{job}"))).ok()?;
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .map(str::to_string)
    };
    let slot = field("slot=")?.parse().ok()?;
    Some((slot, field("runner=")))
}

/// runner name -> job, from every claim file (a dead worker's stays until taken over).
pub fn runner_jobs(claims: &Path) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for e in std::fs::read_dir(claims).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(job) = name.strip_prefix("job-").and_then(|j| j.parse().ok()) else {
            continue;
        };
        if let Some((_, Some(runner))) = claim_of(claims, job) {
            map.insert(runner, job);
        }
    }
    map
}
