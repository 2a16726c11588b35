//! Deleting a thin device as the kernel does (`dmsetup message ... delete`,
//! what lvremove ends in): the metadata stays consistent, and the deleted
//! device's nodes keep their contents until their blocks are reused.

use super::Image;

impl Image {
    /// The entry of `key` in a single-leaf tree.
    fn leaf_entry(&self, leaf: u64, key: u64, what: &str) -> Result<usize, String> {
        let node = self.node(leaf);
        if !node.is_leaf() {
            return Err(format!("the {what} tree is not a single leaf"));
        }
        (0..node.nr_entries())
            .find(|&i| node.key(i) == key)
            .map(|i| i as usize)
            .ok_or(format!("device {key} is not in the {what} tree"))
    }

    /// Deletes device `id`: its top-level and details entries are removed
    /// from copies of their leaves written to newly allocated blocks, the
    /// old leaves are released (their contents left as they were), and the
    /// device's mapping tree is released in both space maps, node by node
    /// as the kernel's btree delete does. The top-level and details trees
    /// must be single leaves. Returns the deleted device's root.
    pub fn delete_device(&mut self, id: u64) -> Result<u64, String> {
        let sb = self.superblock();
        let (top, details) = (sb.mapping_root, sb.details_root);
        let top_i = self.leaf_entry(top, id, "top-level")?;
        let details_i = self.leaf_entry(details, id, "device details")?;
        let root = self.node(top).value_u64(top_i as u32);

        // Blocks freed in a transaction are not reused within it: both new
        // leaves are allocated before anything is released.
        let mut new_roots = Vec::new();
        for (old, i) in [(top, top_i), (details, details_i)] {
            let new = self
                .allocate()
                .ok_or("no free metadata block for the new leaf")?;
            self.copy_node(old, new);
            self.remove_entry(new, i);
            new_roots.push(new);
        }
        for old in [top, details] {
            let c = self.count(false, old);
            self.set_count(false, old, c.saturating_sub(1))?;
        }
        self.release_node(root)?;
        let mut sb = self.superblock();
        sb.mapping_root = new_roots[0];
        sb.details_root = new_roots[1];
        self.set_superblock(&sb);
        Ok(root)
    }

    /// The highest device id.
    pub fn last_device(&self) -> Option<u64> {
        self.device_roots().last().map(|(id, _)| *id)
    }
}
