//! Keys the system generates for rows it creates: workflow IDs, task IDs, message IDs.
//!
//! Each is a version 7 UUID, whose text sorts by its creation time (and, within this process,
//! by creation order). Rows keyed by it land at the growing end of their primary keys' B-trees
//! (`workflow_status`, `workflow_input`, `workflow_output`, `operation_outputs`,
//! `notifications`), so a database with a long history touches a few hot index pages per insert
//! instead of a random leaf among millions: no read of a cold page, and no full-page image in
//! the WAL for each leaf written first after a checkpoint. It is still a UUID in the form
//! DBOS's tools expect; DBOS's own SDKs generate version 4.

/// A new key, ordered after every key this process generated before.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_uuids_that_sort_in_creation_order() {
        let keys: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        for k in &keys {
            let u = uuid::Uuid::parse_str(k).expect("a UUID");
            assert_eq!(u.get_version_num(), 7, "{k}");
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys, "later keys sort after earlier ones");
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "no key repeats");
    }
}
